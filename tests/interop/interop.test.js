// Interoperability: the independent npm OPAQUE client @serenity-kit/opaque
// registers and logs in against a real latchkey process, once on the
// embedded default (SQLite + in-process store) and once on PostgreSQL + Redis;
// a user there also turns TOTP on and logs in with codes from the independent
// npm library otpauth. See README.md.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it, test } from "node:test";

import opaque from "@serenity-kit/opaque";
import * as OTPAuth from "otpauth";

import { startLatchkey } from "./support/latchkey.js";

await opaque.ready;

const hex = (bytes) => randomBytes(bytes).toString("hex");

/** Decodes unpadded base64url, refusing anything else. */
function b64urlBytes(value, what) {
  assert.equal(typeof value, "string", `${what} is a string`);
  assert.match(value, /^[A-Za-z0-9_-]*$/, `${what} is base64url without padding`);
  return Buffer.from(value, "base64url");
}

// Message sizes of the suite (ristretto255, 3DH, SHA-512), SPEC §3.
const SIZES = { registrationResponse: 64, registrationRecord: 192, ke1: 96, ke2: 320, ke3: 64 };

// TOTP as latchkey does it: RFC 6238, HMAC-SHA1, 6 digits, 30-second steps.
const TOTP_PERIOD = 30;
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until the current TOTP step has at least 12 s left. */
async function awaitFreshStep() {
  while (Math.floor(Date.now() / 1000) % TOTP_PERIOD >= 18) await sleep(250);
}

/** A well-formed 6-digit code matching none of the steps near now. */
function wrongCode(totp) {
  const near = new Set();
  for (let k = -3; k <= 3; k++) near.add(totp.generate({ timestamp: Date.now() + k * TOTP_PERIOD * 1000 }));
  for (let n = Number(totp.generate()) + 500_000; ; n++) {
    const candidate = String(n % 1_000_000).padStart(6, "0");
    if (!near.has(candidate)) return candidate;
  }
}

// The key stretching the server's suite expects: Argon2id v0x13, m = 64 MiB, t = 3, p = 4.
const SPEC_KSF = { "argon2id-custom": { memory: 65536, iterations: 3, parallelism: 4 } };

test("the library's default key stretching is Argon2id m=65536 t=3 p=4 (no server)", () => {
  // Registration with the default (no keyStretching option), then logins
  // with explicit parameters: only the matching ones can open the envelope.
  const password = `pw-${hex(8)}`;
  const serverSetup = opaque.server.createSetup();
  const reg = opaque.client.startRegistration({ password });
  const { registrationResponse } = opaque.server.createRegistrationResponse({
    serverSetup,
    userIdentifier: "ksf-check",
    registrationRequest: reg.registrationRequest,
  });
  const { registrationRecord } = opaque.client.finishRegistration({
    clientRegistrationState: reg.clientRegistrationState,
    registrationResponse,
    password,
  });
  const loginWith = (keyStretching) => {
    const start = opaque.client.startLogin({ password });
    const { loginResponse } = opaque.server.startLogin({
      serverSetup,
      registrationRecord,
      startLoginRequest: start.startLoginRequest,
      userIdentifier: "ksf-check",
    });
    return opaque.client.finishLogin({ clientLoginState: start.clientLoginState, loginResponse, password, keyStretching });
  };
  assert.ok(loginWith(SPEC_KSF), "m=65536 t=3 p=4 opens a record made with the default");
  assert.ok(loginWith("memory-constrained"), "the named preset is the same");
  const other = { "argon2id-custom": { memory: 65536, iterations: 3, parallelism: 1 } };
  assert.equal(loginWith(other), undefined, "p=1 does not (the check can fail)");
});

for (const backend of [
  { name: "embedded SQLite + in-process store", kind: "embedded" },
  { name: "PostgreSQL + Redis", kind: "postgres-redis" },
]) {
  describe(`latchkey on ${backend.name}`, () => {
    let server;
    const username = `Interop-${hex(6)}`; // mixed case: the server normalizes it
    const normalized = username.toLowerCase();
    const password = `correct horse ${hex(8)}`;
    let userId;

    before(async () => {
      server = await startLatchkey(backend.kind);
    });

    after(async () => {
      await server?.stop();
    });

    async function call(method, path, { body, token } = {}) {
      const headers = {};
      if (body !== undefined) headers["content-type"] = "application/json";
      if (token !== undefined) headers.authorization = `Bearer ${token}`;
      const res = await fetch(`${server.baseUrl}${path}`, {
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
          // left undefined; asserts below show the text
        }
      }
      return { status: res.status, headers: res.headers, json, text };
    }

    function expectStatus(res, status, what) {
      assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status} ${res.text}`);
    }

    function expectProblem(res, status, code, what) {
      expectStatus(res, status, what);
      assert.match(res.headers.get("content-type") ?? "", /^application\/problem\+json/, `${what}: content type`);
      assert.equal(res.json?.code, code, `${what}: problem code`);
    }

    /** The whole client registration flow; returns the finish response. */
    async function register(name, pw) {
      const start = opaque.client.startRegistration({ password: pw });
      assert.equal(b64urlBytes(start.registrationRequest, "registrationRequest").length, 32);
      const res1 = await call("POST", "/v1/registration/start", {
        body: { username: name, registration_request: start.registrationRequest },
      });
      expectStatus(res1, 200, "registration/start");
      const response = res1.json.registration_response;
      assert.equal(b64urlBytes(response, "registration_response").length, SIZES.registrationResponse);
      const { registrationRecord } = opaque.client.finishRegistration({
        clientRegistrationState: start.clientRegistrationState,
        registrationResponse: response,
        password: pw,
      });
      assert.equal(b64urlBytes(registrationRecord, "registrationRecord").length, SIZES.registrationRecord);
      return call("POST", "/v1/registration/finish", {
        body: { username: name, registration_record: registrationRecord },
      });
    }

    /** login/start + the client's finishLogin (undefined when it fails). */
    async function loginStart(name, pw) {
      const start = opaque.client.startLogin({ password: pw });
      assert.equal(b64urlBytes(start.startLoginRequest, "startLoginRequest").length, SIZES.ke1);
      const res = await call("POST", "/v1/login/start", {
        body: { username: name, credential_request: start.startLoginRequest },
      });
      expectStatus(res, 200, "login/start");
      assert.equal(typeof res.json.login_id, "string");
      assert.equal(b64urlBytes(res.json.credential_response, "credential_response").length, SIZES.ke2);
      const client = opaque.client.finishLogin({
        clientLoginState: start.clientLoginState,
        loginResponse: res.json.credential_response,
        password: pw,
      });
      return { loginId: res.json.login_id, credentialResponse: res.json.credential_response, client };
    }

    const device = () => ({ fingerprint: `interop-${hex(8)}`, name: "node interop test" });

    /** A full successful login; returns the session answer. */
    async function login(name = username, pw = password) {
      const { loginId, client } = await loginStart(name, pw);
      assert.ok(client, "finishLogin accepted the server's credential response");
      assert.equal(b64urlBytes(client.finishLoginRequest, "finishLoginRequest").length, SIZES.ke3);
      const res = await call("POST", "/v1/login/finish", {
        body: { login_id: loginId, credential_finalization: client.finishLoginRequest, device: device() },
      });
      expectStatus(res, 200, "login/finish");
      return res.json;
    }

    const whoami = (token) => call("GET", "/v1/sessions/current", { token });

    it("registers a new user", async () => {
      const res = await register(username, password);
      expectStatus(res, 201, "registration/finish");
      assert.match(res.json.user_id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      userId = res.json.user_id;
    });

    it("refuses the same username again (other case) with 409 conflict", async () => {
      assert.ok(userId, "the user was registered");
      expectProblem(await register(normalized, `other ${password}`), 409, "conflict", "second registration");
    });

    it("logs in, and whoami names the user", async () => {
      assert.ok(userId, "the user was registered");
      const session = await login();
      assert.ok(session.session_token.startsWith("lk_s_"), "session token prefix");
      assert.ok(session.refresh_token.startsWith("lk_r_"), "refresh token prefix");
      assert.equal(session.user_id, userId);
      assert.equal(session.aal, "aal1");
      assert.equal(session.new_device, true);
      for (const field of ["token_expires_at", "session_expires_at"]) {
        assert.ok(!Number.isNaN(Date.parse(session[field])), `${field} is a timestamp`);
      }

      const me = await whoami(session.session_token);
      expectStatus(me, 200, "whoami");
      assert.equal(me.json.username, normalized);
      assert.equal(me.json.user_id, userId);
      assert.equal(me.json.session_id, session.session_id);
      assert.equal(me.json.aal, "aal1");
      assert.equal(me.headers.get("x-user-id"), userId);
      assert.equal(me.headers.get("x-session-id"), session.session_id);
      assert.equal(me.headers.get("x-aal"), "aal1");
    });

    it("refreshes (old session token refused, new one works), then logs out", async () => {
      assert.ok(userId, "the user was registered");
      const session = await login();

      const refreshed = await call("POST", "/v1/sessions/refresh", { body: { refresh_token: session.refresh_token } });
      expectStatus(refreshed, 200, "refresh");
      assert.ok(refreshed.json.session_token.startsWith("lk_s_"));
      assert.ok(refreshed.json.refresh_token.startsWith("lk_r_"));
      assert.notEqual(refreshed.json.session_token, session.session_token);
      assert.notEqual(refreshed.json.refresh_token, session.refresh_token);

      expectProblem(await whoami(session.session_token), 401, "unauthorized", "whoami with the old token");
      const me = await whoami(refreshed.json.session_token);
      expectStatus(me, 200, "whoami with the new token");
      assert.equal(me.headers.get("x-user-id"), userId);
      assert.equal(me.json.session_id, session.session_id, "same session");

      const out = await call("DELETE", "/v1/sessions/current", { token: refreshed.json.session_token });
      expectStatus(out, 204, "logout");
      expectProblem(await whoami(refreshed.json.session_token), 401, "unauthorized", "whoami after logout");
    });

    it("reusing a rotated refresh token revokes the whole session", async () => {
      assert.ok(userId, "the user was registered");
      const session = await login();
      const refreshed = await call("POST", "/v1/sessions/refresh", { body: { refresh_token: session.refresh_token } });
      expectStatus(refreshed, 200, "refresh");

      const reuse = await call("POST", "/v1/sessions/refresh", { body: { refresh_token: session.refresh_token } });
      expectStatus(reuse, 401, "refresh with the rotated token");
      expectProblem(await whoami(refreshed.json.session_token), 401, "unauthorized", "whoami after reuse");
      const again = await call("POST", "/v1/sessions/refresh", { body: { refresh_token: refreshed.json.refresh_token } });
      expectStatus(again, 401, "refresh with the newest token after reuse");
    });

    it("a wrong password and an unknown user fail alike", async () => {
      assert.ok(userId, "the user was registered");
      const wrong = await loginStart(username, `wrong ${password}`);
      assert.equal(wrong.client, undefined, "finishLogin returns undefined for a wrong password");
      const unknown = await loginStart(`nobody-${hex(6)}`, password);
      assert.equal(unknown.client, undefined, "finishLogin returns undefined for a fake credential response");
      assert.equal(unknown.credentialResponse.length, wrong.credentialResponse.length, "same response size");

      // The client gives up, but a syntactically valid (random) KE3 must still be refused.
      const finish = (loginId) =>
        call("POST", "/v1/login/finish", {
          body: {
            login_id: loginId,
            credential_finalization: randomBytes(SIZES.ke3).toString("base64url"),
            device: device(),
          },
        });
      const wrongRes = await finish(wrong.loginId);
      const unknownRes = await finish(unknown.loginId);
      expectProblem(wrongRes, 401, "invalid_credentials", "finish with a wrong password");
      expectProblem(unknownRes, 401, "invalid_credentials", "finish for an unknown user");
      assert.deepEqual(unknownRes.json, wrongRes.json, "identical problem bodies");

      // The user can still log in.
      await login();
    });

    it("enrolls TOTP, then logs in with codes from otpauth and with a recovery code", async () => {
      // A user of its own: with TOTP on, the other tests' logins would stop at mfa_required.
      const name = `Totp-${hex(6)}`;
      const normalizedName = name.toLowerCase();
      const pw = `battery staple ${hex(8)}`;
      const reg = await register(name, pw);
      expectStatus(reg, 201, "registration/finish");
      const totpUserId = reg.json.user_id;
      const first = await login(name, pw);
      assert.equal(first.aal, "aal1");

      // Enrolment: the otpauth URI, parsed by the independent library.
      const enroll = await call("POST", "/v1/totp/enroll", { token: first.session_token });
      expectStatus(enroll, 200, "totp/enroll");
      const { secret, otpauth_uri: uri, qr_png: qrPng } = enroll.json;
      assert.match(secret, /^[A-Z2-7]+$/, "secret is base32 (RFC 4648, unpadded)");
      assert.ok(uri.startsWith(`otpauth://totp/latchkey:${normalizedName}?`), `otpauth URI: ${uri}`);
      const totp = OTPAuth.URI.parse(uri);
      assert.ok(totp instanceof OTPAuth.TOTP, "the URI is a TOTP one");
      assert.equal(totp.issuer, "latchkey");
      assert.equal(totp.label, normalizedName);
      assert.equal(totp.algorithm, "SHA1");
      assert.equal(totp.digits, 6);
      assert.equal(totp.period, TOTP_PERIOD);
      assert.equal(totp.secret.base32, secret, "the URI's secret is the secret field");
      assert.equal(totp.secret.bytes.length, 20, "a 160-bit secret");
      assert.equal(typeof qrPng, "string");
      assert.match(qrPng, /^[A-Za-z0-9+/]+={0,2}$/, "qr_png is base64");
      const png = Buffer.from(qrPng, "base64");
      assert.ok(png.length > PNG_SIGNATURE.length, "qr_png is not empty");
      assert.deepEqual(png.subarray(0, PNG_SIGNATURE.length), PNG_SIGNATURE, "qr_png is a PNG");

      // Confirming consumes the code's step (and every older one), so it
      // uses the previous step's code and leaves the current step for login.
      await awaitFreshStep();
      const confirm = await call("POST", "/v1/totp/confirm", {
        token: first.session_token,
        body: { code: totp.generate({ timestamp: Date.now() - TOTP_PERIOD * 1000 }) },
      });
      expectStatus(confirm, 200, "totp/confirm");
      const recoveryCodes = confirm.json.recovery_codes;
      assert.ok(Array.isArray(recoveryCodes), "recovery_codes is an array");
      assert.equal(recoveryCodes.length, 10);
      assert.equal(new Set(recoveryCodes).size, 10, "distinct recovery codes");
      for (const code of recoveryCodes) assert.equal(typeof code, "string");
      const confirmed = await whoami(first.session_token);
      expectStatus(confirmed, 200, "whoami after confirm");
      assert.equal(confirmed.json.aal, "aal2", "the confirming session is aal2");
      assert.equal(confirmed.headers.get("x-aal"), "aal2");

      /** Password login now stops at the second factor: returns the MFA token. */
      async function passwordStep() {
        const { loginId, client } = await loginStart(name, pw);
        assert.ok(client, "finishLogin accepted the server's credential response");
        const res = await call("POST", "/v1/login/finish", {
          body: { login_id: loginId, credential_finalization: client.finishLoginRequest, device: device() },
        });
        expectStatus(res, 200, "login/finish with TOTP on");
        assert.equal(res.json.mfa_required, true);
        assert.ok(res.json.mfa_token.startsWith("lk_m_"), "MFA token prefix");
        assert.ok(!Number.isNaN(Date.parse(res.json.mfa_expires_at)), "mfa_expires_at is a timestamp");
        assert.equal(res.json.session_token, undefined, "no session before the second factor");
        return res.json.mfa_token;
      }
      const secondFactor = (mfaToken, factor) => call("POST", "/v1/login/totp", { body: { mfa_token: mfaToken, ...factor } });

      // A wrong code, then the current step's code.
      const mfaToken = await passwordStep();
      expectProblem(await secondFactor(mfaToken, { code: wrongCode(totp) }), 401, "invalid_credentials", "a wrong code");
      const currentCode = totp.generate();
      const session = await secondFactor(mfaToken, { code: currentCode });
      expectStatus(session, 200, "login/totp with the current code");
      assert.ok(session.json.session_token.startsWith("lk_s_"), "session token prefix");
      assert.ok(session.json.refresh_token.startsWith("lk_r_"), "refresh token prefix");
      assert.equal(session.json.user_id, totpUserId);
      assert.equal(session.json.aal, "aal2");
      const me = await whoami(session.json.session_token);
      expectStatus(me, 200, "whoami after login/totp");
      assert.equal(me.json.username, normalizedName);
      assert.equal(me.json.user_id, totpUserId);
      assert.equal(me.json.aal, "aal2");
      assert.equal(me.headers.get("x-aal"), "aal2");

      // The same code once more: its step is used up.
      expectProblem(
        await secondFactor(await passwordStep(), { code: currentCode }),
        401,
        "invalid_credentials",
        "a replayed code",
      );

      // A recovery code works once.
      const recoveryCode = recoveryCodes[0];
      const recovered = await secondFactor(await passwordStep(), { recovery_code: recoveryCode });
      expectStatus(recovered, 200, "login/totp with a recovery code");
      assert.equal(recovered.json.user_id, totpUserId);
      assert.equal(recovered.json.aal, "aal2");
      const meAgain = await whoami(recovered.json.session_token);
      expectStatus(meAgain, 200, "whoami after a recovery code");
      assert.equal(meAgain.headers.get("x-aal"), "aal2");
      expectProblem(
        await secondFactor(await passwordStep(), { recovery_code: recoveryCode }),
        401,
        "invalid_credentials",
        "a used recovery code",
      );
    });
  });
}
