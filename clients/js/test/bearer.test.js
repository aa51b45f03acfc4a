// Every operation of the client in bearer mode, against a running latchkey.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createRemoteJWKSet, jwtVerify } from "jose";
import * as OTPAuth from "otpauth";

import { createClient, deviceKey, LatchkeyError, memoryDeviceStore } from "../dist/index.js";
import { newCredentials, recordingFetch, sleep, startServer } from "./support.js";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** A bearer client with a recording fetch (`.fetch.requests`) and its own device store unless given one. */
function client({ deviceStore = memoryDeviceStore() } = {}) {
  const fetch = recordingFetch();
  const lk = createClient({ baseUrl: server.baseUrl, fetch, deviceStore });
  return Object.assign(lk, { fetch, store: deviceStore });
}

/** A registered user and a client logged in as them. */
async function loggedIn(prefix, options) {
  const creds = newCredentials(prefix);
  const lk = client(options);
  const { user_id } = await lk.register(creds.username, creds.password);
  const result = await lk.login(creds.username, creds.password, { deviceName: `${prefix} device` });
  assert.equal(result.kind, "session");
  return { ...creds, userId: user_id, lk, session: result.session };
}

/** Asserts that `promise` rejects with a LatchkeyError of `status` and `code`; returns it. */
async function refused(promise, status, code) {
  const err = await promise.then(
    () => assert.fail(`expected ${status} ${code}, got success`),
    (e) => e,
  );
  assert.ok(err instanceof LatchkeyError, `a LatchkeyError, got ${err}`);
  assert.equal(err.code, code, err.message);
  assert.equal(err.status, status, err.message);
  return err;
}

describe("registration and login", () => {
  test("register, log in as a new device, log in again with the stored device credential", async () => {
    const { username, password, userId, lk, session } = await loggedIn("newdev");
    assert.equal(session.user_id, userId);
    assert.equal(session.aal, "aal1");
    assert.equal(session.new_device, true);
    assert.match(session.device_token ?? "", /^lk_d_/);
    assert.equal(await lk.store.get(deviceKey(server.baseUrl, username)), session.device_token, "kept in the store");
    assert.deepEqual(lk.getTokens(), { sessionToken: session.session_token, refreshToken: session.refresh_token });
    const first = lk.fetch.calls("POST", "/v1/login/start")[0];
    assert.equal(first.body.device_token, undefined, "no device credential the first time");

    // Another client instance on the same device (same store); the name in another case.
    const again = client({ deviceStore: lk.store });
    const second = await again.login(username.toUpperCase(), password);
    assert.equal(second.kind, "session");
    assert.equal(second.session.new_device, false);
    assert.equal(second.session.device_id, session.device_id);
    assert.equal(second.session.device_token ?? undefined, undefined, "no new credential");
    assert.equal(again.fetch.calls("POST", "/v1/login/start")[0].body.device_token, session.device_token);
    assert.equal(again.fetch.calls("POST", "/v1/login/finish")[0].body.device_token, session.device_token);
  });

  test("a taken name is 409 conflict", async () => {
    const { username } = await loggedIn("taken");
    await refused(client().register(username, "another password"), 409, "conflict");
  });

  test("a wrong password fails at the client: no login/finish is sent", async () => {
    const { username } = await loggedIn("wrongpw");
    const lk = client();
    const err = await refused(lk.login(username, "not the password"), 401, "invalid_credentials");
    assert.match(err.detail ?? "", /client/);
    assert.equal(lk.fetch.calls("POST", "/v1/login/start").length, 1);
    assert.equal(lk.fetch.calls("POST", "/v1/login/finish").length, 0, "no finish");
    assert.equal(lk.getTokens(), undefined);
  });

  test("an unknown user fails the same way", async () => {
    const lk = client();
    await refused(lk.login(newCredentials("nobody").username, "whatever"), 401, "invalid_credentials");
    assert.equal(lk.fetch.calls("POST", "/v1/login/finish").length, 0);
  });
});

describe("sessions", () => {
  test("whoami", async () => {
    const { username, userId, lk, session } = await loggedIn("whoami");
    const me = await lk.whoami();
    assert.equal(me.username, username);
    assert.equal(me.user_id, userId);
    assert.equal(me.session_id, session.session_id);
    assert.equal(me.aal, "aal1");
    assert.equal(me.auth_time, session.auth_time);
    assert.equal(me.device?.device_id, session.device_id);
    assert.equal(me.device?.name, "whoami device");
    await refused(lk.whoami({ aal: "aal2" }), 401, "mfa_required");
    assert.equal((await lk.whoami({ maxAge: 3600 })).session_id, session.session_id);
  });

  test("account: name, roles and TOTP state; request() reaches the admin API once the role is granted", async () => {
    const { username, userId, lk } = await loggedIn("Account");
    const account = await lk.account();
    assert.equal(account.user_id, userId);
    assert.equal(account.username, username.toLowerCase(), "the normalized name");
    assert.deepEqual(account.roles, []);
    assert.equal(account.totp_enabled, false);
    assert.ok(!Number.isNaN(Date.parse(account.created_at)), `created_at: ${account.created_at}`);
    const users = (api, headers) =>
      api.GET("/v1/admin/users", { headers, params: { query: { q: username.toUpperCase().slice(0, 10), limit: 200 } } });
    await refused(lk.request(users), 403, "forbidden");

    await server.cli(["admin", "grant", username]);
    assert.deepEqual((await lk.account()).roles, ["admin"]);
    const page = await lk.request(users);
    assert.ok(page.users.some((u) => u.user_id === userId), "the prefix search (in another case) finds the user");
    assert.ok(page.users.every((u) => u.username.startsWith(username.toLowerCase().slice(0, 10))));
    await refused(client().account(), 401, "unauthorized");
  });

  test("refresh is single-flight: concurrent callers share one rotation", async () => {
    const { lk, session } = await loggedIn("refresh");
    lk.fetch.clear();
    const results = await Promise.all(Array.from({ length: 5 }, () => lk.refresh()));
    assert.equal(lk.fetch.calls("POST", "/v1/sessions/refresh").length, 1, "exactly one refresh request");
    for (const r of results) assert.equal(r, results[0], "every caller gets the same answer");
    assert.equal(lk.fetch.calls("POST", "/v1/sessions/refresh")[0].body.refresh_token, session.refresh_token);
    const rotated = results[0];
    assert.notEqual(rotated.session_token, session.session_token);
    assert.notEqual(rotated.refresh_token, session.refresh_token);
    assert.equal(rotated.session_id, session.session_id);
    assert.deepEqual(lk.getTokens(), { sessionToken: rotated.session_token, refreshToken: rotated.refresh_token });
    assert.equal((await lk.whoami()).session_id, session.session_id, "the new token works");

    // The next refresh is a new rotation, with the new refresh token.
    lk.fetch.clear();
    const next = await lk.refresh();
    assert.equal(lk.fetch.calls("POST", "/v1/sessions/refresh")[0].body.refresh_token, rotated.refresh_token);
    assert.notEqual(next.refresh_token, rotated.refresh_token);
  });

  test("sessions, revoke, revokeOthers", async () => {
    const { username, password, lk, session } = await loggedIn("sessions");
    const b = client({ deviceStore: lk.store });
    const c = client();
    const sb = await b.login(username, password);
    const sc = await c.login(username, password);
    assert.equal(sb.kind, "session");
    assert.equal(sc.kind, "session");

    const list = await lk.sessions();
    assert.deepEqual(
      list.map((s) => s.session_id).sort(),
      [session.session_id, sb.session.session_id, sc.session.session_id].sort(),
    );
    assert.deepEqual(
      list.filter((s) => s.current).map((s) => s.session_id),
      [session.session_id],
    );

    await lk.revoke(sb.session.session_id);
    await refused(b.whoami(), 401, "unauthorized");
    assert.equal(b.getTokens(), undefined, "a session that is over is forgotten");
    await refused(lk.revoke(sb.session.session_id), 404, "not_found");

    assert.equal(await lk.revokeOthers(), 1);
    await refused(c.whoami(), 401, "unauthorized");
    assert.deepEqual(
      (await lk.sessions()).map((s) => s.session_id),
      [session.session_id],
    );
  });

  test("logout ends the session and forgets its tokens", async () => {
    const { lk, session } = await loggedIn("logout");
    await lk.logout();
    assert.equal(lk.getTokens(), undefined);
    assert.equal(lk.fetch.calls("DELETE", "/v1/sessions/current").length, 1);
    await refused(lk.whoami(), 401, "unauthorized");
    // The old token is refused by the server too.
    const res = await fetch(`${server.baseUrl}/v1/sessions/current`, {
      headers: { authorization: `Bearer ${session.session_token}` },
    });
    assert.equal(res.status, 401);
    await lk.logout(); // nothing to do
  });

  test("jwt() verifies with jose against the JWKS", async () => {
    const { userId, lk, session } = await loggedIn("jwt");
    const { token, expires_at } = await lk.jwt();
    const jwks = createRemoteJWKSet(new URL(`${server.baseUrl}/.well-known/jwks.json`));
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer: "latchkey",
      audience: "latchkey",
      algorithms: ["EdDSA"],
    });
    assert.equal(protectedHeader.alg, "EdDSA");
    assert.equal(payload.sub, userId);
    assert.equal(payload.sid, session.session_id);
    assert.equal(payload.aal, "aal1");
    assert.equal(payload.exp, Math.floor(Date.parse(expires_at) / 1000));
  });
});

describe("devices", () => {
  test("devices, trustDevice, removeDevice", async () => {
    const { username, password, lk, session } = await loggedIn("devices");
    const other = client();
    const otherLogin = await other.login(username, password, { deviceName: "the other one" });
    assert.equal(otherLogin.kind, "session");

    const devices = await lk.devices();
    assert.equal(devices.length, 2);
    const mine = devices.find((d) => d.device_id === session.device_id);
    assert.equal(mine?.name, "devices device");
    assert.equal(mine?.trust, "unknown");

    await lk.trustDevice(session.device_id, "trusted");
    assert.equal((await lk.devices()).find((d) => d.device_id === session.device_id)?.trust, "trusted");
    await lk.trustDevice(session.device_id, "unknown");
    assert.equal((await lk.devices()).find((d) => d.device_id === session.device_id)?.trust, "unknown");

    await lk.removeDevice(otherLogin.session.device_id);
    assert.deepEqual(
      (await lk.devices()).map((d) => d.device_id),
      [session.device_id],
    );
    await refused(other.whoami(), 401, "unauthorized");
    await refused(lk.removeDevice(otherLogin.session.device_id), 404, "not_found");
  });
});

describe("passwords", () => {
  test("changePassword, then the new password logs in and the old one fails at the client", async () => {
    const { username, password, lk, session } = await loggedIn("chpw");
    const other = client();
    assert.equal((await other.login(username, password)).kind, "session");

    const newPassword = `${password} changed`;
    await lk.changePassword(newPassword);
    assert.equal((await lk.whoami()).session_id, session.session_id, "the calling session stays");
    await refused(other.whoami(), 401, "unauthorized");

    const fresh = client();
    await refused(fresh.login(username, password), 401, "invalid_credentials");
    assert.equal(fresh.fetch.calls("POST", "/v1/login/finish").length, 0);
    assert.equal((await fresh.login(username, newPassword)).kind, "session");
  });

  test("reset with a token from the CLI", async () => {
    const { username, password, lk } = await loggedIn("reset");
    const token = (await server.cli(["admin", "reset", username])).trim();
    assert.match(token, /^lk_t_/);

    const anonymous = client();
    const newPassword = `${password} reset`;
    await anonymous.reset(token, newPassword);
    assert.equal(anonymous.getTokens(), undefined);
    await refused(lk.whoami(), 401, "unauthorized");
    await refused(anonymous.login(username, password), 401, "invalid_credentials");
    assert.equal((await anonymous.login(username, newPassword)).kind, "session");
    await refused(client().reset(token, "yet another"), 401, "invalid_credentials");
  });
});

describe("TOTP", () => {
  test("login with a code, a wrong code, and a recovery code", async () => {
    const { username, password, lk } = await loggedIn("totp");
    const enrollment = await lk.enrollTotp();
    const totp = new OTPAuth.TOTP({
      secret: OTPAuth.Secret.fromBase32(enrollment.secret),
      algorithm: "SHA1",
      digits: 6,
      period: 30,
    });
    // Leave at least 12 s of the current step, so that no step boundary
    // falls between making a code and the server checking it.
    const left = 30_000 - (Date.now() % 30_000);
    if (left < 12_000) await sleep(left + 200);
    // Confirm with the previous step's code: the current one stays free for the login.
    const recoveryCodes = await lk.confirmTotp(totp.generate({ timestamp: Date.now() - 30_000 }));
    assert.equal(recoveryCodes.length, 10);
    assert.equal((await lk.account()).totp_enabled, true, "account() tells TOTP is on");

    // A client with an empty store: the device credential comes with the
    // session of login/totp and is filed under the username.
    const store = memoryDeviceStore();
    const device = client({ deviceStore: store });
    const step = await device.login(username, password);
    assert.equal(step.kind, "mfa");
    assert.match(step.mfaToken, /^lk_m_/);
    assert.ok(Date.parse(step.expiresAt) > Date.now());
    assert.equal(device.getTokens(), undefined, "no session before the second factor");

    const current = totp.generate();
    const wrong = String((Number(current) + 1) % 1_000_000).padStart(6, "0");
    await refused(device.loginTotp(step.mfaToken, { code: wrong }), 401, "invalid_credentials");
    const session = await device.loginTotp(step.mfaToken, { code: current });
    assert.equal(session.aal, "aal2");
    assert.equal(session.new_device, true);
    assert.equal(await store.get(deviceKey(server.baseUrl, username)), session.device_token);
    assert.equal((await device.whoami()).aal, "aal2");
    assert.equal((await device.whoami({ aal: "aal2" })).session_id, session.session_id);

    const again = await device.login(username, password);
    assert.equal(again.kind, "mfa");
    const recovered = await device.loginTotp(again.mfaToken, { recoveryCode: recoveryCodes[0] });
    assert.equal(recovered.aal, "aal2");
    assert.equal(recovered.new_device, false, "the stored credential was sent");
    assert.equal(recovered.device_id, session.device_id);

    const third = await device.login(username, password);
    assert.equal(third.kind, "mfa");
    await refused(device.loginTotp(third.mfaToken, { recoveryCode: recoveryCodes[0] }), 401, "invalid_credentials");

    // Off again, from an aal2 session, with the next step's code (one step
    // of skew is accepted; the current step is used up).
    await device.disableTotp(totp.generate({ timestamp: Date.now() + 30_000 }));
    const plain = await device.login(username, password);
    assert.equal(plain.kind, "session");
    assert.equal((await device.account()).totp_enabled, false, "and off again");
  });
});
