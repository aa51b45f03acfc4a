// The one way the pages talk to latchkey: same-origin fetch with the session
// in cookies (never in script-visible storage), JSON bodies, the CSRF header
// on every request, one refresh by cookie on a 401, and problem+json errors
// turned into ApiError.

export const CSRF_HEADER = "X-Latchkey-CSRF";

/** An answer other than 2xx, with the problem document's fields. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string | undefined;
  readonly retryAfter: number | undefined;

  constructor(status: number, code: string, detail: string | undefined, title: string, retryAfter?: number) {
    super(describe(status, code, detail, title, retryAfter));
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

/** A Retry-After for people: seconds, minutes or hours; beyond two days, ask an admin. */
function waitText(seconds: number | undefined): string {
  if (seconds === undefined) return "";
  if (seconds < 90) return ` Try again in ${seconds} s.`;
  if (seconds < 90 * 60) return ` Try again in ${Math.ceil(seconds / 60)} min.`;
  if (seconds < 48 * 3600) return ` Try again in ${Math.ceil(seconds / 3600)} h.`;
  return " Ask an administrator to unlock it.";
}

/** What the user reads for a problem: the server's detail when it gave one. */
function describe(status: number, code: string, detail: string | undefined, title: string, retryAfter?: number): string {
  const wait = waitText(retryAfter);
  if (detail) return `${detail}${detail.endsWith(".") ? "" : "."}${wait}`;
  switch (code) {
    case "invalid_credentials":
      return "The username or password is not right.";
    case "unauthorized":
      return "You are not signed in (or your session ended).";
    case "reauthentication_required":
      return "Please confirm your password first.";
    case "mfa_required":
      return "A second factor is needed.";
    case "forbidden":
      return "You are not allowed to do that.";
    case "not_found":
      return "Not found.";
    case "conflict":
      return "That conflicts with the current state.";
    case "rate_limited":
      return `Too many attempts.${wait || " Try again later."}`;
    case "account_locked":
      return `This account is locked for now.${wait}`;
    case "device_blocked":
      return "This device is blocked for this account. Ask an administrator.";
    case "unavailable":
      return "The service is unavailable right now. Try again later.";
    default:
      return `${title || "Error"} (${status}).`;
  }
}

interface Problem {
  code?: string;
  detail?: string;
  title?: string;
}

type Method = "GET" | "POST" | "PUT" | "DELETE";

export interface CallOptions {
  /** A JSON body (sent with Content-Type: application/json). */
  body?: unknown;
  /** Do not try a refresh by cookie on a 401 (login and refresh routes). */
  noRefresh?: boolean;
}

let refreshing: Promise<boolean> | null = null;

/**
 * POST /v1/sessions/refresh with the refresh cookie. Single-flight: callers
 * arriving while one runs share its outcome. Resolves to whether a new
 * session cookie was set.
 */
export function refreshByCookie(): Promise<boolean> {
  refreshing ??= (async () => {
    try {
      const res = await send("POST", "/v1/sessions/refresh", {});
      await res.arrayBuffer();
      return res.ok;
    } catch {
      return false;
    } finally {
      // Let the next 401 (after this refresh's session has ended) try again.
      setTimeout(() => {
        refreshing = null;
      }, 0);
    }
  })();
  return refreshing;
}

function send(method: Method, path: string, body: unknown): Promise<Response> {
  const headers: Record<string, string> = { [CSRF_HEADER]: "1", Accept: "application/json" };
  const init: RequestInit = { method, headers, credentials: "same-origin", cache: "no-store", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

async function toError(res: Response): Promise<ApiError> {
  let problem: Problem = {};
  try {
    const text = await res.text();
    if (text) problem = JSON.parse(text) as Problem;
  } catch {
    // not JSON: described by the status alone
  }
  const retry = res.headers.get("Retry-After");
  const retryAfter = retry !== null && /^[0-9]+$/.test(retry) ? Number(retry) : undefined;
  return new ApiError(res.status, problem.code ?? "http_error", problem.detail, problem.title ?? res.statusText, retryAfter);
}

/**
 * Calls a latchkey route and resolves to its JSON answer (undefined for an
 * empty body, as for 204). A 401 `unauthorized` leads to one refresh by
 * cookie and one retry; any other failure rejects with an ApiError.
 */
export async function api<T = unknown>(method: Method, path: string, options: CallOptions = {}): Promise<T> {
  let res: Response;
  try {
    res = await send(method, path, options.body);
  } catch {
    throw new ApiError(0, "network", "The service could not be reached", "Network error");
  }
  if (res.status === 401 && !options.noRefresh) {
    const err = await toError(res);
    if (err.code !== "unauthorized" || !(await refreshByCookie())) throw err;
    res = await send(method, path, options.body);
  }
  if (!res.ok) throw await toError(res);
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

// The answers the pages read (SPEC §4).

export interface DeviceRef {
  device_id: string;
  name: string | null;
}

export interface WhoAmI {
  session_id: string;
  user_id: string;
  username: string;
  aal: "aal1" | "aal2";
  auth_time: string;
  created_at: string;
  last_seen_at: string;
  session_expires_at: string;
  device: DeviceRef | null;
}

export interface SessionItem {
  session_id: string;
  aal: string;
  device: DeviceRef | null;
  ip: string | null;
  user_agent: string | null;
  created_at: string;
  last_seen_at: string;
  session_expires_at: string;
  current?: boolean;
}

export type Trust = "unknown" | "trusted" | "blocked";

export interface DeviceItem {
  device_id: string;
  name: string | null;
  trust: Trust;
  first_seen_at: string;
  last_seen_at: string;
  last_ip: string | null;
  user_agent: string | null;
}

/** A session answer of a cookie login (the tokens are in cookies). */
export interface CookieSession {
  session_id: string;
  aal: string;
  auth_time: string;
  user_id: string;
}

export interface MfaRequired {
  mfa_required: true;
  mfa_token: string;
}
