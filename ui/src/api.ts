// The one way the pages talk to latchkey: the TypeScript client
// (@latchkey/client) in cookie mode. The session stays in HttpOnly cookies
// (never in script-visible storage), every request carries the CSRF header,
// an expired session is renewed by cookie once (tabs take turns through a
// Web Lock), and refusals are LatchkeyErrors, described here for people.

import { createClient, LatchkeyError } from "@latchkey/client";

export { LatchkeyError };
export type { components, DeviceItem, SessionItem, Trust, WhoAmI } from "@latchkey/client";

/** Same-origin requests that are never cached and never follow a redirect. */
function pageFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  return fetch(new Request(input, { ...init, cache: "no-store", redirect: "error" }));
}

/** latchkey on this page's origin, with the session in cookies. */
export const lk = createClient({ baseUrl: "", mode: "cookie", fetch: pageFetch });

/** A Retry-After for people: seconds, minutes or hours; beyond two days, ask an admin. */
function waitText(seconds: number | undefined): string {
  if (seconds === undefined) return "";
  if (seconds < 90) return ` Try again in ${seconds} s.`;
  if (seconds < 90 * 60) return ` Try again in ${Math.ceil(seconds / 60)} min.`;
  if (seconds < 48 * 3600) return ` Try again in ${Math.ceil(seconds / 3600)} h.`;
  return " Ask an administrator to unlock it.";
}

/**
 * What the user reads for a refusal: the server's detail when it gave one
 * (a refusal the client decided itself, such as a password that does not
 * open the server's answer, is described by its code).
 */
export function describeError(err: LatchkeyError): string {
  const wait = waitText(err.retryAfter);
  const detail = err.problem === undefined ? undefined : err.detail;
  if (detail) return `${detail}${detail.endsWith(".") ? "" : "."}${wait}`;
  switch (err.code) {
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
      return `${err.problem?.title || "Error"} (${err.status}).`;
  }
}

/** Whether `err` is latchkey's refusal with this code. */
export function refused(err: unknown, code: string): err is LatchkeyError {
  return err instanceof LatchkeyError && err.code === code;
}
