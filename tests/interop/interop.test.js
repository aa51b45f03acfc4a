// Interoperability: the independent npm OPAQUE client @serenity-kit/opaque
// registers and logs in against a real latchkey process, once on the
// embedded default (SQLite + in-process store) and once on PostgreSQL + Redis;
// a user there also turns TOTP on and logs in with codes from the independent
// npm library otpauth. On each backend a second server, with a low lockout
// threshold, shows lockout and device credentials as real clients meet them,
// and a third changes and resets passwords (OPAQUE registration again, from
// the same client library) and asks whoami for a recent login or a second
// factor. The first server also hands out JWTs for other services, verified
// by the independent npm library jose against latchkey's JWKS, and answers
// RFC 7662 introspection for a service token. See README.md.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it, test } from "node:test";

import { createClient, LatchkeyError } from "@latchkey/client";
import opaque from "@serenity-kit/opaque";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import * as OTPAuth from "otpauth";

import {
  Api,
  DEVICE_TOKEN_PREFIX,
  Device,
  SIZES,
  b64urlBytes,
  checkResetToken,
  checkSessionAnswer,
  deviceStoreOf,
  expectProblem,
  expectStatus,
  hex,
  madeUpDeviceToken,
  madeUpResetToken,
  recordingFetch,
  retryAfterSeconds,
  strayRegistrationRecord,
} from "./support/client.js";
import { startLatchkey } from "./support/latchkey.js";

await opaque.ready;

// TOTP as latchkey does it: RFC 6238, HMAC-SHA1, 6 digits, 30-second steps.
const TOTP_PERIOD = 30;
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The lockout server: the second consecutive failure locks for the first
// step (1 s), the third hard-locks for 24 h. (The hard limit must be above
// the threshold.) The hard lock is what the tests look at, so they do not
// race the 1-second step: they wait it out.
const LOCKOUT_THRESHOLD = 2;
const LOCKOUT_HARD_LIMIT = 3;
const HARD_LOCK_SECONDS = 24 * 3600;
const LONGEST_STEP_SECONDS = 3600;
const LOCKOUT_SETTINGS = {
  LATCHKEY_RATELIMIT__LOCKOUT_THRESHOLD: String(LOCKOUT_THRESHOLD),
  LATCHKEY_RATELIMIT__LOCKOUT_HARD_LIMIT: String(LOCKOUT_HARD_LIMIT),
  LATCHKEY_RATELIMIT__HARD_LOCK: "24h",
};

// The first server's tokens for other services: the JWT's issuer and
// audience (not the defaults, so that the settings are seen to reach the
// claims) and two service tokens allowed to introspect (a comma-separated
// list; the gateway in the test uses the second).
const TOKEN_ISSUER = "https://login.interop.test";
const TOKEN_AUDIENCE = "interop-api";
const SERVICE_TOKENS = [`interop-service-${hex(16)}`, `interop-gateway-${hex(16)}`];
const GATEWAY_TOKEN = SERVICE_TOKENS[1];
const JWT_LIFETIME_SECONDS = 300;
const TOKEN_SETTINGS = {
  LATCHKEY_TOKENS__ISSUER: TOKEN_ISSUER,
  LATCHKEY_TOKENS__AUDIENCE: TOKEN_AUDIENCE,
  LATCHKEY_SERVICE_TOKENS: SERVICE_TOKENS.join(","),
};

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
    let api;

    before(async () => {
      server = await startLatchkey(backend.kind, { settings: TOKEN_SETTINGS });
      api = new Api(server.baseUrl);
    });

    after(async () => {
      await server?.stop();
    });

    const call = (...args) => api.call(...args);
    const whoami = (token) => api.whoami(token);
    // The client application the tests log in from: it keeps the device
    // credential of the first session and presents it afterwards.
    const laptop = new Device({ name: "interop laptop" });
    const login = (name = username, pw = password, device = laptop) => api.login(name, pw, device);
    let laptopDeviceId;

    it("registers a new user", async () => {
      const res = await api.register(username, password);
      expectStatus(res, 201, "registration/finish");
      assert.match(res.json.user_id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      userId = res.json.user_id;
    });

    it("refuses the same username again (other case) with 409 conflict", async () => {
      assert.ok(userId, "the user was registered");
      expectProblem(await api.register(normalized, `other ${password}`), 409, "conflict", "second registration");
    });

    it("registration/finish without a start: the same 400 for a taken and a free name", async () => {
      assert.ok(userId, "the user was registered");
      const free = `Fresh-${hex(6)}`;
      const finish = (name) =>
        call("POST", "/v1/registration/finish", {
          body: { username: name, registration_record: strayRegistrationRecord(name, `stray ${hex(8)}`) },
        });
      const taken = await finish(username);
      const untaken = await finish(free);
      expectProblem(taken, 400, "invalid_request", "finish without start, taken name");
      expectProblem(untaken, 400, "invalid_request", "finish without start, free name");
      assert.deepEqual(untaken.json, taken.json, "identical problem bodies");
      assert.equal(untaken.text, taken.text, "identical answers");
      // The stray finish left nothing behind: the free name registers normally.
      expectStatus(await api.register(free, `fresh ${password}`), 201, "registration of the free name");
    });

    it("logs in, and whoami names the user", async () => {
      assert.ok(userId, "the user was registered");
      assert.equal(laptop.tokenFor(username), undefined, "no device credential yet");
      const session = await login();
      assert.ok(session.session_token.startsWith("lk_s_"), "session token prefix");
      assert.ok(session.refresh_token.startsWith("lk_r_"), "refresh token prefix");
      assert.equal(session.user_id, userId);
      assert.equal(session.aal, "aal1");
      assert.equal(session.new_device, true);
      for (const field of ["token_expires_at", "session_expires_at", "auth_time"]) {
        assert.ok(!Number.isNaN(Date.parse(session[field])), `${field} is a timestamp`);
      }
      assert.ok(session.device_token.startsWith(DEVICE_TOKEN_PREFIX), "a device credential for the new device");
      assert.equal(laptop.tokenFor(username), session.device_token, "the client keeps it");
      laptopDeviceId = session.device_id;

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

    it("a later login presents the device credential: same device, no new credential", async () => {
      const token = laptop.tokenFor(username);
      assert.ok(token && laptopDeviceId, "the first login issued a device credential");
      const session = await login();
      assert.equal(session.new_device, false, "a known device");
      assert.equal(session.device_id, laptopDeviceId, "the same device");
      assert.equal("device_token" in session, false, "no new credential");
      assert.equal(laptop.tokenFor(username), token, "the client keeps its credential");
    });

    it("refreshes (old session token refused, new one works), then logs out (through @latchkey/client)", async () => {
      assert.ok(userId, "the user was registered");
      const fetch = recordingFetch();
      const lk = createClient({ baseUrl: server.baseUrl, fetch, deviceStore: deviceStoreOf(laptop, server.baseUrl) });
      const result = await lk.login(username, password, { deviceName: laptop.name, fingerprint: laptop.fingerprint });
      assert.equal(result.kind, "session");
      const session = result.session;
      checkSessionAnswer(session, "login/finish");
      assert.equal(session.device_id, laptopDeviceId, "the client presented the laptop's credential");

      const refreshed = await lk.refresh();
      expectStatus(fetch.to("POST", "/v1/sessions/refresh")[0], 200, "refresh");
      assert.ok(refreshed.session_token.startsWith("lk_s_"));
      assert.ok(refreshed.refresh_token.startsWith("lk_r_"));
      assert.notEqual(refreshed.session_token, session.session_token);
      assert.notEqual(refreshed.refresh_token, session.refresh_token);
      assert.deepEqual(lk.getTokens(), { sessionToken: refreshed.session_token, refreshToken: refreshed.refresh_token });

      expectProblem(await whoami(session.session_token), 401, "unauthorized", "whoami with the old token");
      const me = await whoami(refreshed.session_token);
      expectStatus(me, 200, "whoami with the new token");
      assert.equal(me.headers.get("x-user-id"), userId);
      assert.equal(me.json.session_id, session.session_id, "same session");
      assert.equal((await lk.whoami()).session_id, session.session_id, "the client's whoami: same session");

      await lk.logout();
      expectStatus(fetch.to("DELETE", "/v1/sessions/current")[0], 204, "logout");
      assert.equal(lk.getTokens(), undefined, "the client forgot the tokens");
      expectProblem(await whoami(refreshed.session_token), 401, "unauthorized", "whoami after logout");
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

    it("issues a JWT that jose verifies against the JWKS; introspection says active until the logout, a tampered JWT never", async () => {
      assert.ok(userId, "the user was registered");
      const session = await login();
      const requestedAt = Math.floor(Date.now() / 1000);

      const issued = await call("POST", "/v1/tokens/jwt", { token: session.session_token });
      expectStatus(issued, 200, "tokens/jwt");
      const { token: jwt, expires_at: expiresAt } = issued.json;
      assert.match(jwt ?? "", /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, `a compact JWS: ${issued.text}`);

      // The published keys, as RFC 7517 and RFC 8037 describe Ed25519 ones.
      const published = await call("GET", "/.well-known/jwks.json");
      expectStatus(published, 200, "jwks.json");
      assert.equal(published.headers.get("cache-control"), "public, max-age=300", "the JWKS is cacheable");
      assert.ok(Array.isArray(published.json?.keys) && published.json.keys.length >= 1, `keys: ${published.text}`);
      for (const key of published.json.keys) {
        const fields = Object.keys(key).sort();
        assert.deepEqual(fields, ["alg", "crv", "kid", "kty", "use", "x"], `a JWK: ${JSON.stringify(key)}`);
        assert.equal(key.kty, "OKP");
        assert.equal(key.crv, "Ed25519");
        assert.equal(key.alg, "EdDSA");
        assert.equal(key.use, "sig");
        assert.equal(b64urlBytes(key.x, "x").length, 32, "an Ed25519 public key");
        assert.ok(typeof key.kid === "string" && key.kid.length > 0, "a kid");
      }
      const header = decodeProtectedHeader(jwt);
      assert.equal(header.alg, "EdDSA");
      assert.ok(
        published.json.keys.some((k) => k.kid === header.kid),
        `the JWT's kid ${header.kid} is published`,
      );

      // Verified by jose as another service would verify it: offline, with the JWKS.
      const jwks = createRemoteJWKSet(new URL(`${server.baseUrl}/.well-known/jwks.json`));
      const verify = (token, options = {}) =>
        jwtVerify(token, jwks, { issuer: TOKEN_ISSUER, audience: TOKEN_AUDIENCE, algorithms: ["EdDSA"], ...options });
      const { payload, protectedHeader } = await verify(jwt);
      assert.equal(protectedHeader.kid, header.kid);
      assert.equal(payload.iss, TOKEN_ISSUER, "iss is the configured issuer");
      assert.equal(payload.aud, TOKEN_AUDIENCE, "aud is the configured audience");
      assert.equal(payload.sub, session.user_id, "sub is the user");
      assert.equal(payload.sub, userId);
      assert.equal(payload.sid, session.session_id, "sid is the session");
      assert.equal(payload.aal, session.aal);
      assert.equal(payload.aal, "aal1");
      assert.equal(payload.auth_time, Math.floor(Date.parse(session.auth_time) / 1000), "auth_time is the login's");
      assert.equal(payload.exp - payload.iat, JWT_LIFETIME_SECONDS, "a 5-minute token");
      const now = Math.floor(Date.now() / 1000);
      assert.ok(payload.iat >= requestedAt - 1 && payload.iat <= now + 1, `iat ${payload.iat} is now`);
      // expires_at keeps the fractions of a second that the exp claim drops.
      assert.equal(Math.floor(Date.parse(expiresAt) / 1000), payload.exp, `expires_at ${expiresAt} is exp`);
      assert.ok(typeof payload.jti === "string" && payload.jti.length > 0, "a jti");
      // jose's checks can fail: the default audience, or an algorithm the verifier does not allow.
      await assert.rejects(verify(jwt, { audience: "latchkey" }), {
        code: "ERR_JWT_CLAIM_VALIDATION_FAILED",
        claim: "aud",
      });
      await assert.rejects(verify(jwt, { algorithms: ["ES256"] }), { code: "ERR_JOSE_ALG_NOT_ALLOWED" });

      // Tampered: the claims raised to aal2 under the old signature, or the signature itself changed.
      const [encodedHeader, encodedPayload, signature] = jwt.split(".");
      const raised = Buffer.from(JSON.stringify({ ...payload, aal: "aal2" })).toString("base64url");
      const otherSignature = Buffer.from(signature, "base64url");
      otherSignature[0] ^= 0x01;
      const tampered = {
        "claims raised to aal2": `${encodedHeader}.${raised}.${signature}`,
        "signature changed": `${encodedHeader}.${encodedPayload}.${otherSignature.toString("base64url")}`,
      };
      for (const [what, token] of Object.entries(tampered)) {
        await assert.rejects(
          verify(token),
          { code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" },
          `jose refuses the JWT with its ${what}`,
        );
        const res = await api.introspect(GATEWAY_TOKEN, token);
        expectStatus(res, 200, `introspection of the JWT with its ${what}`);
        assert.deepEqual(res.json, { active: false }, `the JWT with its ${what} is inactive`);
      }

      // Introspection (form-encoded, as RFC 7662 has it) while the session lives.
      const jwtAnswer = await api.introspect(GATEWAY_TOKEN, jwt);
      expectStatus(jwtAnswer, 200, "introspection of the JWT");
      assert.deepEqual(
        jwtAnswer.json,
        {
          active: true,
          sub: userId,
          sid: session.session_id,
          aal: "aal1",
          exp: payload.exp,
          iat: payload.iat,
          token_type: "jwt",
        },
        "the JWT is active, with its claims",
      );
      const asJson = await api.introspect(GATEWAY_TOKEN, jwt, { json: true });
      expectStatus(asJson, 200, "introspection of the JWT, JSON body");
      assert.deepEqual(asJson.json, jwtAnswer.json, "a JSON body gets the same answer");
      const otherService = await api.introspect(SERVICE_TOKENS[0], jwt);
      expectStatus(otherService, 200, "introspection with the first service token of the list");
      assert.deepEqual(otherService.json, jwtAnswer.json, "every service token of the list may introspect");

      const sessionAnswer = await api.introspect(GATEWAY_TOKEN, session.session_token);
      expectStatus(sessionAnswer, 200, "introspection of the session token");
      const { iat: sessionIat, ...sessionFacts } = sessionAnswer.json ?? {};
      assert.deepEqual(
        sessionFacts,
        {
          active: true,
          sub: userId,
          sid: session.session_id,
          aal: "aal1",
          exp: Math.floor(Date.parse(session.token_expires_at) / 1000),
          token_type: "session_token",
        },
        `the session token is active until it expires: ${sessionAnswer.text}`,
      );
      assert.ok(Number.isInteger(sessionIat) && sessionIat <= now + 1, `the session token's iat ${sessionIat}`);

      // Introspection is for services only.
      expectProblem(await api.introspect(undefined, jwt), 401, "unauthorized", "introspection without a service token");
      expectProblem(
        await api.introspect(session.session_token, jwt),
        401,
        "unauthorized",
        "introspection with a session token as bearer",
      );

      // Logout: both tokens are inactive at once.
      expectStatus(await call("DELETE", "/v1/sessions/current", { token: session.session_token }), 204, "logout");
      for (const [what, token] of [
        ["the JWT", jwt],
        ["the session token", session.session_token],
      ]) {
        const res = await api.introspect(GATEWAY_TOKEN, token);
        expectStatus(res, 200, `introspection of ${what} after the logout`);
        assert.deepEqual(res.json, { active: false }, `${what} is inactive after the logout`);
      }
      // Offline verification cannot see a logout: jose still accepts the JWT
      // until it expires (that is what introspection is for). The session
      // gets no new one.
      await verify(jwt);
      expectProblem(
        await call("POST", "/v1/tokens/jwt", { token: session.session_token }),
        401,
        "unauthorized",
        "tokens/jwt after the logout",
      );
    });

    it("a wrong password and an unknown user fail alike", async () => {
      assert.ok(userId, "the user was registered");
      const wrong = await api.attemptLogin(username, `wrong ${password}`, new Device());
      assert.equal(wrong.kind, "wrong-password", "finishLogin returns undefined for a wrong password");
      const unknown = await api.attemptLogin(`nobody-${hex(6)}`, password, new Device());
      assert.equal(unknown.kind, "wrong-password", "finishLogin returns undefined for a fake credential response");
      assert.equal(unknown.credentialResponse.length, wrong.credentialResponse.length, "same response size");

      // A real client gives up there. Someone who sends a syntactically
      // valid (random) KE3 all the same must still be refused.
      const finish = (loginId) =>
        call("POST", "/v1/login/finish", {
          body: {
            login_id: loginId,
            credential_finalization: randomBytes(SIZES.ke3).toString("base64url"),
            device: new Device().describe(),
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
      const reg = await api.register(name, pw);
      expectStatus(reg, 201, "registration/finish");
      const totpUserId = reg.json.user_id;
      const phone = new Device({ name: "interop phone" });
      const first = await login(name, pw, phone);
      assert.equal(first.aal, "aal1");
      assert.ok(phone.tokenFor(name), "the first session brought a device credential");

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
        const attempt = await api.attemptLogin(name, pw, phone);
        assert.equal(attempt.kind, "mfa", `login with TOTP on: ${attempt.kind} ${attempt.res?.text ?? ""}`);
        const res = attempt.res;
        assert.equal(res.json.mfa_required, true);
        assert.ok(res.json.mfa_token.startsWith("lk_m_"), "MFA token prefix");
        assert.ok(!Number.isNaN(Date.parse(res.json.mfa_expires_at)), "mfa_expires_at is a timestamp");
        assert.equal(res.json.session_token, undefined, "no session before the second factor");
        return attempt.mfaToken;
      }
      const secondFactor = (mfaToken, factor) => api.secondFactor(name, mfaToken, factor, phone);

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
      assert.equal(session.json.device_id, first.device_id, "the phone presented its credential");
      assert.equal(session.json.new_device, false);
      assert.equal("device_token" in session.json, false, "no new credential for a known device");
      const me = await whoami(session.json.session_token);
      expectStatus(me, 200, "whoami after login/totp");
      assert.equal(me.json.username, normalizedName);
      assert.equal(me.json.user_id, totpUserId);
      assert.equal(me.json.aal, "aal2");
      assert.equal(me.headers.get("x-aal"), "aal2");
      const gate = await api.whoami(session.json.session_token, { aal: "aal2" });
      expectStatus(gate, 200, "whoami?aal=aal2 with the second factor");
      assert.equal(gate.headers.get("x-aal"), "aal2");

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

  describe(`lockout and device credentials on ${backend.name}`, () => {
    let server;
    let api;

    before(async () => {
      server = await startLatchkey(backend.kind, { settings: LOCKOUT_SETTINGS });
      api = new Api(server.baseUrl);
    });

    after(async () => {
      await server?.stop();
    });

    /** Registers a fresh user; returns { name, pw, userId }. */
    const newUser = (prefix) => api.newUser(prefix);

    /**
     * Guesses passwords for `name` as a real client does (login/start, then
     * no login/finish since finishLogin refuses the KE2) until the name is
     * hard-locked, waiting out the short first lock on the way. Returns the
     * 423 answer to the attempt after the last counted guess and the
     * number of guesses the server answered.
     */
    async function guessUntilHardLocked(name, device = new Device({ name: "guesser" })) {
      let answered = 0;
      for (let attempt = 0; attempt < LOCKOUT_HARD_LIMIT + 5; attempt++) {
        const guess = await api.attemptLogin(name, `guess ${hex(8)}`, device);
        if (guess.kind === "wrong-password") {
          answered++;
          assert.ok(answered <= LOCKOUT_HARD_LIMIT, `guess ${answered} for ${name} was answered past the hard limit`);
          continue;
        }
        assert.equal(guess.kind, "refused", `a guess ended in ${guess.kind}`);
        expectProblem(guess.res, 423, "account_locked", `guess after ${answered} answered`);
        const retryAfter = retryAfterSeconds(guess.res, `423 after ${answered} guesses`);
        if (answered === LOCKOUT_HARD_LIMIT) return { res: guess.res, answered, retryAfter };
        // Locked before the hard limit: the first step, from the threshold on.
        assert.ok(answered >= LOCKOUT_THRESHOLD, `locked after only ${answered} guesses`);
        assert.ok(retryAfter <= 5, `the first lock is short (Retry-After ${retryAfter})`);
        await sleep(retryAfter * 1000 + 200);
      }
      assert.fail(`${name} was not hard-locked`);
    }

    function expectHardLock(res, what) {
      expectProblem(res, 423, "account_locked", what);
      const retryAfter = retryAfterSeconds(res, what);
      assert.ok(
        retryAfter > LONGEST_STEP_SECONDS && retryAfter <= HARD_LOCK_SECONDS,
        `${what}: Retry-After ${retryAfter} s is the hard lock's`,
      );
      return retryAfter;
    }

    let lockedAnswer; // the 423 for a real, locked account

    const lockTitle = `${LOCKOUT_HARD_LIMIT} wrong passwords (no login/finish) lock the name; the right one then gets 423 at start`;
    it(lockTitle, async () => {
      const user = await newUser("Locked");
      const { res, answered } = await guessUntilHardLocked(user.name);
      assert.equal(answered, LOCKOUT_HARD_LIMIT, "every guess up to the hard limit got a KE2");
      expectHardLock(res, "the guess after the hard limit");

      const right = await api.attemptLogin(user.name, user.pw, new Device());
      assert.equal(right.kind, "refused", `the right password while locked: ${right.kind}`);
      expectHardLock(right.res, "the right password while locked");
      lockedAnswer = right.res;
    });

    it("an unknown name guessed as often gets the same answers", async () => {
      assert.ok(lockedAnswer, "the account was locked");
      const { res, answered } = await guessUntilHardLocked(`Nobody-${hex(6)}`);
      assert.equal(answered, LOCKOUT_HARD_LIMIT, "as many guesses answered as for the account");
      expectHardLock(res, "an unknown name after the hard limit");
      assert.equal(res.headers.get("content-type"), lockedAnswer.headers.get("content-type"));
      assert.deepEqual(res.json, lockedAnswer.json, "identical problem bodies");
      assert.equal(res.text, lockedAnswer.text, "identical answers");
    });

    it("a trusted device logs in with its credential during the lock; the same fingerprint without it gets 423", async () => {
      const user = await newUser("Trusted");
      const phone = new Device({ name: "interop phone" });
      const first = await api.login(user.name, user.pw, phone);
      assert.equal(first.new_device, true);
      const token = phone.tokenFor(user.name);
      assert.ok(token?.startsWith(DEVICE_TOKEN_PREFIX), "the phone holds a device credential");
      const trust = await api.call("PUT", `/v1/devices/${encodeURIComponent(first.device_id)}/trust`, {
        token: first.session_token,
        body: { trust: "trusted" },
      });
      expectStatus(trust, 204, "trusting the phone");
      const listed = await api.call("GET", "/v1/devices", { token: first.session_token });
      expectStatus(listed, 200, "device list");
      const entry = listed.json.devices.find((d) => d.device_id === first.device_id);
      assert.equal(entry?.trust, "trusted", `the phone is listed as trusted: ${listed.text}`);

      // Someone else guesses until the account's anonymous scope is hard-locked.
      const { answered, res } = await guessUntilHardLocked(user.name);
      assert.equal(answered, LOCKOUT_HARD_LIMIT);
      expectHardLock(res, "the account after the guessing");

      // The phone, presenting its credential, is not locked out.
      const during = await api.attemptLogin(user.name, user.pw, phone);
      assert.equal(during.kind, "session", `the trusted phone during the lock: ${during.kind} ${during.res?.text ?? ""}`);
      assert.equal(during.session.user_id, user.userId);
      assert.equal(during.session.device_id, first.device_id, "the same device");
      assert.equal(during.session.new_device, false);
      assert.equal("device_token" in during.session, false, "no new credential");
      expectStatus(await api.whoami(during.session.session_token), 200, "whoami from the trusted phone");

      // The same fingerprint and name without the credential is anyone: locked.
      const lookalike = await api.attemptLogin(user.name, user.pw, phone.lookalike());
      assert.equal(lookalike.kind, "refused", `the same fingerprint without the credential: ${lookalike.kind}`);
      expectHardLock(lookalike.res, "the same fingerprint without the credential");

      // A made-up credential is no credential.
      const madeUp = phone.lookalike();
      madeUp.setToken(user.name, madeUpDeviceToken(token));
      const madeUpTry = await api.attemptLogin(user.name, user.pw, madeUp);
      assert.equal(madeUpTry.kind, "refused", `a made-up credential: ${madeUpTry.kind}`);
      expectHardLock(madeUpTry.res, "a made-up credential");
      assert.equal(madeUpTry.res.text, lookalike.res.text, "answered as without one");
    });

    it("a blocked device's credential is refused at login/start with 403 device_blocked", async () => {
      const admin = await newUser("Admin");
      const granted = await server.cli(["admin", "grant", admin.name]);
      assert.match(granted, /admin role granted/, `latchkey admin grant: ${granted}`);
      const adminSession = await api.login(admin.name, admin.pw, new Device({ name: "admin console" }));

      const user = await newUser("Blocked");
      const tablet = new Device({ name: "interop tablet" });
      const session = await api.login(user.name, user.pw, tablet);
      assert.ok(tablet.tokenFor(user.name), "the tablet holds a device credential");

      const block = await api.call("PUT", `/v1/admin/devices/${encodeURIComponent(session.device_id)}/trust`, {
        token: adminSession.session_token,
        body: { trust: "blocked" },
      });
      expectStatus(block, 204, "blocking the tablet");
      expectProblem(await api.whoami(session.session_token), 401, "unauthorized", "the blocked tablet's session");

      // Refused at login/start, before any KE2: not even a guess is possible.
      const right = await api.attemptLogin(user.name, user.pw, tablet);
      assert.equal(right.kind, "refused", `the blocked tablet, right password: ${right.kind}`);
      expectProblem(right.res, 403, "device_blocked", "the blocked tablet, right password");
      const wrong = await api.attemptLogin(user.name, `wrong ${user.pw}`, tablet);
      assert.equal(wrong.kind, "refused", `the blocked tablet, wrong password: ${wrong.kind}`);
      expectProblem(wrong.res, 403, "device_blocked", "the blocked tablet, wrong password");
      assert.equal(wrong.res.text, right.res.text, "the same answer whatever the password");

      // The block belongs to the credential: without it, a login is a new device.
      const elsewhere = await api.login(user.name, user.pw, tablet.lookalike());
      assert.equal(elsewhere.new_device, true, "a new device");
      assert.notEqual(elsewhere.device_id, session.device_id, "another device");
      assert.ok(elsewhere.device_token.startsWith(DEVICE_TOKEN_PREFIX), "with a credential of its own");
    });
  });

  describe(`password change, reset and whoami freshness on ${backend.name}`, () => {
    // A server of its own with the default settings: every registration,
    // reset/start and reset/finish counts against the same per-IP
    // registration limit (20 an hour), which the first server's tests
    // already use half of.
    let server;
    let api;

    before(async () => {
      server = await startLatchkey(backend.kind);
      api = new Api(server.baseUrl);
    });

    after(async () => {
      await server?.stop();
    });

    /** A new password as a user would pick one. */
    const newPassword = (what) => `${what} ${hex(8)} tr0ub4dor`;

    /** The user's sessions on two devices: { laptop, phone, sessions }. */
    async function twoSessions(user) {
      const laptop = new Device({ name: "interop laptop" });
      const phone = new Device({ name: "interop phone" });
      const sessions = [await api.login(user.name, user.pw, laptop), await api.login(user.name, user.pw, phone)];
      for (const s of sessions) expectStatus(await api.whoami(s.session_token), 200, "whoami before");
      return { laptop, phone, sessions };
    }

    /** `session` is gone: whoami 401 and its refresh token refused. */
    async function expectRevoked(session, what) {
      expectProblem(await api.whoami(session.session_token), 401, "unauthorized", `${what}: whoami`);
      const refresh = await api.call("POST", "/v1/sessions/refresh", { body: { refresh_token: session.refresh_token } });
      expectStatus(refresh, 401, `${what}: refresh`);
    }

    /** The old password fails at the client, the new one logs in. */
    async function expectPasswordReplaced(user, newPw, device, what) {
      const old = await api.attemptLogin(user.name, user.pw, device);
      assert.equal(old.kind, "wrong-password", `${what}: the old password: ${old.kind} ${old.res?.text ?? ""}`);
      const session = await api.login(user.name, newPw, device);
      assert.equal(session.user_id, user.userId, `${what}: the new password logs the user in`);
      expectStatus(await api.whoami(session.session_token), 200, `${what}: whoami with the new password`);
      return session;
    }

    /**
     * Redeems `resetToken` for `user` as a real client does (no session),
     * then checks the result: every session in `sessions` revoked, the old
     * password refused by the client, the new one working, and the token
     * spent (401 invalid_credentials at reset/start, nothing more sent).
     * Returns that last answer.
     */
    async function redeemReset(user, resetToken, sessions, device, what) {
      const newPw = newPassword("reset");
      const { start, finish } = await api.resetPassword(resetToken, newPw);
      expectStatus(start, 200, `${what}: reset/start`);
      expectStatus(finish, 204, `${what}: reset/finish`);
      assert.equal(finish.text, "", `${what}: reset/finish has no body`);

      for (const [i, s] of sessions.entries()) await expectRevoked(s, `${what}: session ${i + 1} after the reset`);
      await expectPasswordReplaced(user, newPw, device, what);

      const again = await api.resetPassword(resetToken, newPassword("again"));
      assert.equal(again.finish, undefined, `${what}: nothing sent after reset/start refused`);
      expectProblem(again.start, 401, "invalid_credentials", `${what}: the spent token`);
      return again.start;
    }

    it("changes the password: old one refused by the client, new one logs in; other sessions revoked, the caller's kept", async () => {
      const user = await api.newUser("Changer");
      const { laptop, phone, sessions } = await twoSessions(user);
      const [here, there] = sessions;

      // The change through @latchkey/client, holding the laptop's session.
      const fetch = recordingFetch();
      const lk = createClient({ baseUrl: server.baseUrl, fetch });
      lk.setTokens({ sessionToken: here.session_token, refreshToken: here.refresh_token });
      const newPw = newPassword("changed");
      await lk.changePassword(newPw);
      expectStatus(fetch.to("POST", "/v1/account/password/start")[0], 200, "password/start");
      const [finish] = fetch.to("POST", "/v1/account/password/finish");
      expectStatus(finish, 204, "password/finish");
      assert.equal(finish.text, "", "password/finish has no body");

      // The calling session stays, and is the only one left.
      const me = await lk.whoami();
      assert.equal(me.session_id, here.session_id);
      assert.equal(me.user_id, user.userId);
      const listed = await lk.sessions();
      assert.deepEqual(
        listed.map((s) => [s.session_id, s.current]),
        [[here.session_id, true]],
        `only the calling session is left: ${JSON.stringify(listed)}`,
      );
      await expectRevoked(there, "the other session");

      await expectPasswordReplaced(user, newPw, phone, "after the change (phone)");
      await expectPasswordReplaced(user, newPw, laptop, "after the change (laptop)");
      assert.equal((await lk.whoami()).session_id, here.session_id, "the calling session after the new logins");
      assert.deepEqual(fetch.to("POST", "/v1/sessions/refresh"), [], "no refresh was needed");
    });

    it("resets with a token from `latchkey admin reset`: every session revoked, old password refused, new one works, the token spent", async () => {
      const user = await api.newUser("Forgetful");
      const { laptop, sessions } = await twoSessions(user);

      const stdout = await server.cli(["admin", "reset", user.name]);
      assert.match(stdout, /^lk_t_[A-Za-z0-9_-]+\n?$/, `latchkey admin reset prints the token alone: ${JSON.stringify(stdout)}`);
      const resetToken = stdout.trim();
      checkResetToken(resetToken, "latchkey admin reset");

      const spent = await redeemReset(user, resetToken, sessions, laptop, "CLI token");

      // A spent token and one nobody issued get the same answer.
      const madeUp = await api.resetPassword(madeUpResetToken(resetToken), newPassword("made up"));
      assert.equal(madeUp.finish, undefined, "nothing sent after reset/start refused");
      expectProblem(madeUp.start, 401, "invalid_credentials", "a made-up reset token");
      assert.deepEqual(madeUp.start.json, spent.json, "identical problem bodies");
      assert.equal(madeUp.start.text, spent.text, "identical answers");
    });

    it("resets with a token from POST /v1/admin/users/{id}/reset", async () => {
      const admin = await api.newUser("Admin");
      const granted = await server.cli(["admin", "grant", admin.name]);
      assert.match(granted, /admin role granted/, `latchkey admin grant: ${granted}`);
      const adminSession = await api.login(admin.name, admin.pw, new Device({ name: "admin console" }));

      const user = await api.newUser("Locked-out");
      const { phone, sessions } = await twoSessions(user);

      const requestedAt = Date.now();
      const issued = await api.call("POST", `/v1/admin/users/${encodeURIComponent(user.userId)}/reset`, {
        token: adminSession.session_token,
      });
      expectStatus(issued, 201, "admin reset");
      checkResetToken(issued.json.reset_token, "admin reset");
      const expiresAt = Date.parse(issued.json.expires_at);
      assert.ok(!Number.isNaN(expiresAt), `expires_at is a timestamp: ${issued.text}`);
      const lifetime = expiresAt - requestedAt;
      assert.ok(
        lifetime > 23.5 * 3600_000 && lifetime <= 24 * 3600_000 + 60_000,
        `the token lasts the default 24 h (expires_at ${issued.json.expires_at})`,
      );

      await redeemReset(user, issued.json.reset_token, sessions, phone, "admin token");
      expectStatus(await api.whoami(adminSession.session_token), 200, "the admin's session is untouched");
    });

    it("whoami: ?aal=aal2 refuses an aal1 session with mfa_required; ?max_age asks for a recent login", async () => {
      const user = await api.newUser("Gateway");
      const session = await api.login(user.name, user.pw, new Device({ name: "interop browser" }));
      assert.equal(session.aal, "aal1");
      const token = session.session_token;

      const me = await api.whoami(token);
      expectStatus(me, 200, "whoami");
      const authTime = Date.parse(me.json.auth_time);
      assert.ok(!Number.isNaN(authTime), `whoami's auth_time is a timestamp: ${me.text}`);
      assert.ok(Math.abs(authTime - Date.parse(session.auth_time)) <= 1, "whoami's auth_time is the login's");
      const header = me.headers.get("x-auth-time");
      assert.match(header ?? "", /^[0-9]+$/, "X-Auth-Time is unix seconds");
      assert.ok(Math.abs(Number(header) - authTime / 1000) < 1.001, `X-Auth-Time ${header} is auth_time`);

      expectProblem(await api.whoami(token, { aal: "aal2" }), 401, "mfa_required", "whoami?aal=aal2, aal1 session");
      // The same questions through @latchkey/client.
      const lk = createClient({ baseUrl: server.baseUrl });
      lk.setTokens({ sessionToken: token, refreshToken: session.refresh_token });
      const refusal = await lk.whoami({ aal: "aal2" }).catch((e) => e);
      assert.ok(refusal instanceof LatchkeyError, `the client refuses: ${refusal}`);
      assert.deepEqual([refusal.status, refusal.code], [401, "mfa_required"], "the client's whoami({ aal: 'aal2' })");
      assert.equal((await lk.whoami({ maxAge: 3600 })).session_id, session.session_id, "the client's whoami({ maxAge })");
      const recent = await api.whoami(token, { max_age: 3600 });
      expectStatus(recent, 200, "whoami?max_age=3600");
      assert.equal(recent.headers.get("x-session-id"), session.session_id);

      // Two seconds later the login is older than max_age=1.
      await sleep(2_100);
      expectProblem(
        await api.whoami(token, { max_age: 1 }),
        401,
        "reauthentication_required",
        "whoami?max_age=1, login 2 s old",
      );
      expectStatus(await api.whoami(token, { max_age: 3600 }), 200, "whoami?max_age=3600 still");
      expectStatus(await api.whoami(token), 200, "the refusals left the session alone");
    });
  });
}
