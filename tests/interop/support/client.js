// A client of latchkey's HTTP API that behaves like a real application: the
// independent OPAQUE library @serenity-kit/opaque registers and logs in, and
// a Device keeps the device credential (`device_token`, `lk_d_`) latchkey
// hands out with a session and presents it again in later logins.
//
// Like a real client, a login never sends login/finish when the library's
// finishLogin returns undefined: the server's KE2 already told the client
// that the password is wrong (the attempt was counted at login/start).
//
// A password change and a reset run the same client registration flow as a
// sign-up (client.startRegistration, then client.finishRegistration with the
// server's answer), against the account routes instead.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import opaque from "@serenity-kit/opaque";

await opaque.ready;

export const hex = (bytes) => randomBytes(bytes).toString("hex");

// Message sizes of the suite (ristretto255, 3DH, SHA-512), SPEC §3.
export const SIZES = { registrationResponse: 64, registrationRecord: 192, ke1: 96, ke2: 320, ke3: 64 };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const DEVICE_TOKEN_PREFIX = "lk_d_";
export const RESET_TOKEN_PREFIX = "lk_t_";

/** Decodes unpadded base64url, refusing anything else. */
export function b64urlBytes(value, what) {
  assert.equal(typeof value, "string", `${what} is a string`);
  assert.match(value, /^[A-Za-z0-9_-]*$/, `${what} is base64url without padding`);
  return Buffer.from(value, "base64url");
}

export function expectStatus(res, status, what) {
  assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status} ${res.text}`);
}

export function expectProblem(res, status, code, what) {
  expectStatus(res, status, what);
  assert.match(res.headers.get("content-type") ?? "", /^application\/problem\+json/, `${what}: content type`);
  assert.equal(res.json?.code, code, `${what}: problem code`);
}

/** The Retry-After header in whole seconds (asserting it is there and is one). */
export function retryAfterSeconds(res, what) {
  const value = res.headers.get("retry-after");
  assert.ok(value !== null, `${what}: a Retry-After header`);
  assert.match(value, /^[0-9]+$/, `${what}: Retry-After is whole seconds`);
  const seconds = Number(value);
  assert.ok(seconds >= 1, `${what}: Retry-After is at least 1 s`);
  return seconds;
}

/**
 * One installation of a client application. It describes itself with a
 * fingerprint and a name (descriptive only) and keeps, per account, the
 * device credential latchkey issued to it.
 */
export class Device {
  constructor({ name = "node interop test", fingerprint = `interop-${hex(8)}` } = {}) {
    this.name = name;
    this.fingerprint = fingerprint;
    this.tokens = new Map();
  }

  /** Another installation claiming this one's fingerprint and name, without its credentials. */
  lookalike() {
    return new Device({ name: this.name, fingerprint: this.fingerprint });
  }

  tokenFor(username) {
    return this.tokens.get(username.toLowerCase());
  }

  setToken(username, token) {
    this.tokens.set(username.toLowerCase(), token);
  }

  /** Keeps the credential of a session answer, when it carries one. */
  keep(username, session) {
    if (session?.device_token !== undefined) this.setToken(username, session.device_token);
  }

  describe() {
    return { fingerprint: this.fingerprint, name: this.name };
  }
}

/** A device credential nobody issued, shaped like `real` (prefix, length, alphabet). */
export function madeUpDeviceToken(real) {
  const length = real.length - DEVICE_TOKEN_PREFIX.length;
  return DEVICE_TOKEN_PREFIX + randomBytes(length).toString("base64url").slice(0, length);
}

/** A reset token nobody issued, shaped like `real` (prefix, length, alphabet). */
export function madeUpResetToken(real) {
  const length = real.length - RESET_TOKEN_PREFIX.length;
  return RESET_TOKEN_PREFIX + randomBytes(length).toString("base64url").slice(0, length);
}

/** Checks a reset token as an admin receives it: `lk_t_` and base64url. */
export function checkResetToken(token, what) {
  assert.equal(typeof token, "string", `${what}: reset token is a string`);
  assert.match(token, /^lk_t_[A-Za-z0-9_-]{16,}$/, `${what}: reset token shape`);
}

/** Checks the shape of a session answer (SPEC §4). */
export function checkSessionAnswer(session, what) {
  assert.ok(session.session_token?.startsWith("lk_s_"), `${what}: session token prefix`);
  assert.ok(session.refresh_token?.startsWith("lk_r_"), `${what}: refresh token prefix`);
  assert.match(session.session_id ?? "", UUID, `${what}: session_id`);
  assert.match(session.user_id ?? "", UUID, `${what}: user_id`);
  assert.ok(["aal1", "aal2"].includes(session.aal), `${what}: aal`);
  for (const field of ["token_expires_at", "session_expires_at", "auth_time"]) {
    assert.ok(!Number.isNaN(Date.parse(session[field])), `${what}: ${field} is a timestamp`);
  }
  assert.equal(typeof session.device_id, "string", `${what}: device_id`);
  assert.ok(session.device_id.length > 0, `${what}: device_id is not empty`);
  assert.equal(typeof session.new_device, "boolean", `${what}: new_device`);
  if ("device_token" in session) {
    assert.equal(typeof session.device_token, "string", `${what}: device_token`);
    assert.ok(session.device_token.startsWith(DEVICE_TOKEN_PREFIX), `${what}: device_token prefix`);
    assert.equal(session.new_device, true, `${what}: a device credential is issued only to a new device`);
  }
}

/** latchkey's HTTP API at `baseUrl`, used the way a real client uses it. */
export class Api {
  constructor(baseUrl) {
    this.baseUrl = baseUrl;
  }

  async call(method, path, { body, token } = {}) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const res = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        // left undefined; asserts show the text
      }
    }
    return { status: res.status, headers: res.headers, json, text };
  }

  /**
   * POST /v1/tokens/introspect (RFC 7662) as a gateway calls it: the
   * service token as bearer (none when undefined), `token` form-encoded,
   * or as JSON `{"token"}` with `{ json: true }`.
   */
  async introspect(serviceToken, token, { json = false } = {}) {
    const headers = {
      "content-type": json ? "application/json" : "application/x-www-form-urlencoded",
    };
    if (serviceToken !== undefined) headers.authorization = `Bearer ${serviceToken}`;
    const res = await fetch(`${this.baseUrl}/v1/tokens/introspect`, {
      method: "POST",
      headers,
      body: json ? JSON.stringify({ token }) : new URLSearchParams({ token }).toString(),
    });
    const text = await res.text();
    let parsed;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // left undefined; asserts show the text
    }
    return { status: res.status, headers: res.headers, json: parsed, text };
  }

  /**
   * GET /v1/sessions/current; `require` is the gateway's optional query
   * ({ max_age: seconds, aal: "aal2" }).
   */
  whoami(token, require = {}) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(require)) query.set(key, String(value));
    const qs = query.toString();
    return this.call("GET", qs ? `/v1/sessions/current?${qs}` : "/v1/sessions/current", { token });
  }

  /**
   * The client side of OPAQUE registration against a pair of routes:
   * `fields` go into both bodies (with `registration_request`, then
   * `registration_record`), `token` is the bearer, if any. Resolves to
   * { start } when the start route did not answer 200 (nothing else was
   * sent), else { start, finish }.
   */
  async registrationFlow(startPath, finishPath, pw, { fields = {}, token } = {}) {
    const reg = opaque.client.startRegistration({ password: pw });
    assert.equal(b64urlBytes(reg.registrationRequest, "registrationRequest").length, 32);
    const start = await this.call("POST", startPath, {
      token,
      body: { ...fields, registration_request: reg.registrationRequest },
    });
    if (start.status !== 200) return { start };
    const response = start.json?.registration_response;
    assert.equal(b64urlBytes(response, `${startPath}: registration_response`).length, SIZES.registrationResponse);
    const { registrationRecord } = opaque.client.finishRegistration({
      clientRegistrationState: reg.clientRegistrationState,
      registrationResponse: response,
      password: pw,
    });
    assert.equal(b64urlBytes(registrationRecord, "registrationRecord").length, SIZES.registrationRecord);
    const finish = await this.call("POST", finishPath, {
      token,
      body: { ...fields, registration_record: registrationRecord },
    });
    return { start, finish };
  }

  /** Registers a fresh user `PREFIX-<hex>`; returns { name, pw, userId }. */
  async newUser(prefix) {
    const name = `${prefix}-${hex(6)}`;
    const pw = `${prefix} password ${hex(8)}`;
    const res = await this.register(name, pw);
    expectStatus(res, 201, `registration of ${name}`);
    return { name, pw, userId: res.json.user_id };
  }

  /** The whole client registration flow; returns the finish response. */
  async register(name, pw) {
    const { start, finish } = await this.registrationFlow("/v1/registration/start", "/v1/registration/finish", pw, {
      fields: { username: name },
    });
    expectStatus(start, 200, "registration/start");
    return finish;
  }

  /**
   * A password change from the session of `sessionToken` (its login must be
   * recent): registration of `newPw` at /v1/account/password/start|finish.
   * Returns { start } or { start, finish } as registrationFlow does.
   */
  changePassword(sessionToken, newPw) {
    return this.registrationFlow("/v1/account/password/start", "/v1/account/password/finish", newPw, {
      token: sessionToken,
    });
  }

  /**
   * A reset with `resetToken` (no session): registration of `newPw` at
   * /v1/account/reset/start|finish, the token in both bodies. Returns
   * { start } or { start, finish } as registrationFlow does.
   */
  resetPassword(resetToken, newPw) {
    return this.registrationFlow("/v1/account/reset/start", "/v1/account/reset/finish", newPw, {
      fields: { reset_token: resetToken },
    });
  }

  /**
   * A login as a real client does it, from `device` (its credential for
   * this account is sent when it has one). Resolves to one of:
   * - { kind: "refused", res }: login/start did not answer 200 (locked,
   *   blocked, limited); nothing else was sent;
   * - { kind: "wrong-password", loginId, credentialResponse }: finishLogin
   *   returned undefined, so login/finish was not sent;
   * - { kind: "refused-at-finish", res }: login/finish did not answer 200;
   * - { kind: "mfa", mfaToken, res }: the second factor is due;
   * - { kind: "session", session, res }: logged in; a device credential in
   *   the answer is kept by `device`.
   */
  async attemptLogin(name, pw, device) {
    const deviceToken = device.tokenFor(name);
    const start = opaque.client.startLogin({ password: pw });
    assert.equal(b64urlBytes(start.startLoginRequest, "startLoginRequest").length, SIZES.ke1);
    const startBody = { username: name, credential_request: start.startLoginRequest };
    if (deviceToken !== undefined) startBody.device_token = deviceToken;
    const res1 = await this.call("POST", "/v1/login/start", { body: startBody });
    if (res1.status !== 200) return { kind: "refused", res: res1 };
    assert.equal(typeof res1.json.login_id, "string", "login/start: login_id");
    const credentialResponse = res1.json.credential_response;
    assert.equal(b64urlBytes(credentialResponse, "credential_response").length, SIZES.ke2);

    const finished = opaque.client.finishLogin({
      clientLoginState: start.clientLoginState,
      loginResponse: credentialResponse,
      password: pw,
    });
    if (finished === undefined) {
      // The KE2 does not open with this password: a real client stops here.
      return { kind: "wrong-password", loginId: res1.json.login_id, credentialResponse };
    }
    assert.equal(b64urlBytes(finished.finishLoginRequest, "finishLoginRequest").length, SIZES.ke3);
    const finishBody = {
      login_id: res1.json.login_id,
      credential_finalization: finished.finishLoginRequest,
      device: device.describe(),
    };
    if (deviceToken !== undefined) finishBody.device_token = deviceToken;
    const res2 = await this.call("POST", "/v1/login/finish", { body: finishBody });
    if (res2.status !== 200) return { kind: "refused-at-finish", res: res2 };
    if (res2.json.mfa_required === true) {
      assert.equal(res2.json.session_token, undefined, "no session before the second factor");
      assert.equal(res2.json.device_token, undefined, "no device credential before the second factor");
      return { kind: "mfa", mfaToken: res2.json.mfa_token, res: res2 };
    }
    checkSessionAnswer(res2.json, "login/finish");
    device.keep(name, res2.json);
    return { kind: "session", session: res2.json, res: res2 };
  }

  /** A login that must end in a session; returns the session answer. */
  async login(name, pw, device) {
    const attempt = await this.attemptLogin(name, pw, device);
    if (attempt.kind === "wrong-password") assert.fail(`login of ${name}: finishLogin refused the server's KE2`);
    assert.equal(attempt.kind, "session", `login of ${name}: ${attempt.kind} ${attempt.res?.status} ${attempt.res?.text}`);
    return attempt.session;
  }

  /** POST /v1/login/totp; a session answer's device credential is kept by `device`. */
  async secondFactor(name, mfaToken, factor, device) {
    const res = await this.call("POST", "/v1/login/totp", { body: { mfa_token: mfaToken, ...factor } });
    if (res.status === 200) {
      checkSessionAnswer(res.json, "login/totp");
      device.keep(name, res.json);
    }
    return res;
  }
}

/**
 * A well-formed registration record for `name` made against a throwaway
 * server setup: what a client could send to registration/finish without
 * having called registration/start.
 */
export function strayRegistrationRecord(name, pw) {
  const serverSetup = opaque.server.createSetup();
  const reg = opaque.client.startRegistration({ password: pw });
  const { registrationResponse } = opaque.server.createRegistrationResponse({
    serverSetup,
    userIdentifier: name,
    registrationRequest: reg.registrationRequest,
  });
  const { registrationRecord } = opaque.client.finishRegistration({
    clientRegistrationState: reg.clientRegistrationState,
    registrationResponse,
    password: pw,
  });
  assert.equal(b64urlBytes(registrationRecord, "registrationRecord").length, SIZES.registrationRecord);
  return registrationRecord;
}

/**
 * A fetch for @latchkey/client that records each answer (`.answers`:
 * method, path, status, body text) as the tests' own client does, so that
 * what went over the wire can still be asserted.
 */
export function recordingFetch() {
  const answers = [];
  const wrapped = async (input, init) => {
    const request = new Request(input, init);
    const res = await fetch(request);
    const text = await res.clone().text();
    answers.push({ method: request.method, path: new URL(request.url).pathname, status: res.status, text });
    return res;
  };
  wrapped.answers = answers;
  /** The answers to METHOD PATH, in order. */
  wrapped.to = (method, path) => answers.filter((a) => a.method === method && a.path === path);
  return wrapped;
}

/**
 * A DeviceStore for @latchkey/client over a Device: the client files and
 * finds the device credential there under its own key (base URL and
 * normalized username).
 */
export function deviceStoreOf(device, baseUrl) {
  const prefix = `latchkey-device:${baseUrl.replace(/\/+$/, "")}:`;
  const name = (key) => {
    assert.ok(key.startsWith(prefix), `a device key for ${baseUrl}: ${key}`);
    return key.slice(prefix.length);
  };
  return {
    get: (key) => device.tokenFor(name(key)),
    set: (key, token) => device.setToken(name(key), token),
  };
}
