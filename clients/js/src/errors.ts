import type { components } from "./schema.js";

/** An RFC 9457 problem document as latchkey sends it. */
export type Problem = components["schemas"]["Problem"];

/**
 * A call latchkey refused (or, for a few cases the client decides itself,
 * would refuse; see `code`).
 *
 * - `status`: the HTTP status (401, 423, ...).
 * - `code`: the problem's stable machine code (`invalid_credentials`,
 *   `unauthorized`, `reauthentication_required`, `mfa_required`,
 *   `account_locked`, `rate_limited`, `device_blocked`, `csrf_rejected`,
 *   ...). An answer without a problem body (a proxy's 502, say) gets
 *   `http_<status>`.
 * - `detail`: the problem's human-readable detail, if any.
 * - `retryAfter`: the `Retry-After` header in seconds (423 and 429).
 *
 * Two errors come from the client without a request: a login whose
 * password does not open the server's answer (`finishLogin` fails, so
 * login/finish is not sent) is 401 `invalid_credentials`, exactly what the
 * server would have said; a bearer call without a session is 401
 * `unauthorized`.
 */
export class LatchkeyError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string | undefined;
  readonly retryAfter: number | undefined;
  /** The whole problem document, when the answer had one. */
  readonly problem: Problem | undefined;

  constructor(init: { status: number; code: string; detail?: string; retryAfter?: number; problem?: Problem }) {
    super(`latchkey: ${init.status} ${init.code}${init.detail ? `: ${init.detail}` : ""}`);
    this.name = "LatchkeyError";
    this.status = init.status;
    this.code = init.code;
    this.detail = init.detail;
    this.retryAfter = init.retryAfter;
    this.problem = init.problem;
  }

  /** The error for a refused answer; `body` is what openapi-fetch parsed. */
  static fromResponse(response: Response, body: unknown): LatchkeyError {
    const problem = isProblem(body) ? body : undefined;
    return new LatchkeyError({
      status: response.status,
      code: problem?.code ?? `http_${response.status}`,
      detail: problem?.detail ?? undefined,
      retryAfter: retryAfterSeconds(response.headers.get("retry-after")),
      problem,
    });
  }
}

function isProblem(body: unknown): body is Problem {
  return typeof body === "object" && body !== null && typeof (body as { code?: unknown }).code === "string";
}

/** `Retry-After` (RFC 9110: delay-seconds or an HTTP-date) in seconds. */
function retryAfterSeconds(value: string | null): number | undefined {
  if (value === null) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
