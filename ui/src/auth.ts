// OPAQUE in the browser with @serenity-kit/opaque: registration, login (with
// a cookie session), the second factor, and registration again for a password
// change or a reset. The password never leaves this page; the server sees
// OPAQUE messages only.

import * as opaque from "@serenity-kit/opaque";

import { ApiError, api, type CookieSession, type MfaRequired } from "./api";

/** A short label for this browser, shown in the session and device lists. */
export function deviceDescription(): { name: string } {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua)
    ? "Edge"
    : /Firefox\//.test(ua)
      ? "Firefox"
      : /Chrom(e|ium)\//.test(ua)
        ? "Chromium"
        : /Safari\//.test(ua)
          ? "Safari"
          : "Browser";
  const platform = /Android/.test(ua)
    ? "Android"
    : /iPhone|iPad/.test(ua)
      ? "iOS"
      : /Mac OS X/.test(ua)
        ? "macOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Linux/.test(ua)
            ? "Linux"
            : "";
  return { name: platform ? `${browser} on ${platform}` : browser };
}

/** Registers `username` with `password`; resolves to the new user id. */
export async function register(username: string, password: string): Promise<string> {
  await opaque.ready;
  const { clientRegistrationState, registrationRequest } = opaque.client.startRegistration({ password });
  const start = await api<{ registration_response: string }>("POST", "/v1/registration/start", {
    body: { username, registration_request: registrationRequest },
    noRefresh: true,
  });
  const { registrationRecord } = opaque.client.finishRegistration({
    clientRegistrationState,
    registrationResponse: start.registration_response,
    password,
  });
  const done = await api<{ user_id: string }>("POST", "/v1/registration/finish", {
    body: { username, registration_record: registrationRecord },
    noRefresh: true,
  });
  return done.user_id;
}

export type LoginResult = { kind: "session"; session: CookieSession } | { kind: "mfa"; mfaToken: string };

/**
 * An OPAQUE login asking for a cookie session. The device credential travels
 * as a cookie too, so nothing is stored by the page. A password the server's
 * KE2 does not open with is reported without sending login/finish, as a real
 * client does (the attempt was counted at login/start).
 */
export async function login(username: string, password: string): Promise<LoginResult> {
  await opaque.ready;
  const { clientLoginState, startLoginRequest } = opaque.client.startLogin({ password });
  const start = await api<{ login_id: string; credential_response: string }>("POST", "/v1/login/start", {
    body: { username, credential_request: startLoginRequest },
    noRefresh: true,
  });
  const finished = opaque.client.finishLogin({
    clientLoginState,
    loginResponse: start.credential_response,
    password,
  });
  if (finished === undefined) {
    throw new ApiError(401, "invalid_credentials", undefined, "Unauthorized");
  }
  const answer = await api<CookieSession | MfaRequired>("POST", "/v1/login/finish", {
    body: {
      login_id: start.login_id,
      credential_finalization: finished.finishLoginRequest,
      device: deviceDescription(),
      session_cookie: true,
    },
    noRefresh: true,
  });
  if ("mfa_required" in answer && answer.mfa_required) return { kind: "mfa", mfaToken: answer.mfa_token };
  return { kind: "session", session: answer as CookieSession };
}

/** The second step: a TOTP code or a recovery code for the MFA token. */
export function secondFactor(
  mfaToken: string,
  factor: { code: string } | { recovery_code: string },
): Promise<CookieSession> {
  return api<CookieSession>("POST", "/v1/login/totp", {
    body: { mfa_token: mfaToken, ...factor, session_cookie: true },
    noRefresh: true,
  });
}

/**
 * OPAQUE registration against a start/finish pair of routes, for a password
 * change (session cookie) or a reset (`fields` carries the reset token).
 */
export async function reregister(
  startPath: string,
  finishPath: string,
  password: string,
  fields: Record<string, string> = {},
): Promise<void> {
  await opaque.ready;
  const { clientRegistrationState, registrationRequest } = opaque.client.startRegistration({ password });
  const start = await api<{ registration_response: string }>("POST", startPath, {
    body: { ...fields, registration_request: registrationRequest },
  });
  const { registrationRecord } = opaque.client.finishRegistration({
    clientRegistrationState,
    registrationResponse: start.registration_response,
    password,
  });
  await api("POST", finishPath, { body: { ...fields, registration_record: registrationRecord } });
}
