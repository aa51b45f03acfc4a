// Expired session tokens (retry after one shared refresh), step-up errors
// and Retry-After, on a server with short lifetimes and a low lockout
// threshold.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createClient, LatchkeyError, memoryDeviceStore } from "../dist/index.js";
import { newCredentials, recordingFetch, sleep, startServer } from "./support.js";

const TOKEN_LIFETIME_MS = 2_000;

let server;
before(async () => {
  server = await startServer({
    LATCHKEY_SESSIONS__TOKEN_LIFETIME: `${TOKEN_LIFETIME_MS / 1000}s`,
    LATCHKEY_SESSIONS__REAUTH_WINDOW: "2s",
    LATCHKEY_RATELIMIT__LOCKOUT_THRESHOLD: "2",
  });
});
after(async () => {
  await server?.stop();
});

async function loggedIn(prefix) {
  const creds = newCredentials(prefix);
  const fetch = recordingFetch();
  const lk = createClient({ baseUrl: server.baseUrl, fetch, deviceStore: memoryDeviceStore() });
  await lk.register(creds.username, creds.password);
  const result = await lk.login(creds.username, creds.password);
  assert.equal(result.kind, "session");
  return { ...creds, lk, fetch, session: result.session };
}

test("an expired session token: calls refresh once, together, and are retried", async () => {
  const { lk, fetch, session } = await loggedIn("expired");
  await sleep(TOKEN_LIFETIME_MS + 500);
  fetch.clear();
  const [me, list, devices] = await Promise.all([lk.whoami(), lk.sessions(), lk.devices()]);
  assert.equal(me.session_id, session.session_id);
  assert.equal(list.length, 1);
  assert.equal(devices.length, 1);
  assert.equal(fetch.calls("POST", "/v1/sessions/refresh").length, 1, "one refresh for the three calls");
  assert.equal(fetch.calls("GET", "/v1/sessions/current").length, 2, "whoami: refused, then retried");
  const [first, retry] = fetch.calls("GET", "/v1/sessions/current");
  assert.equal(first.headers.get("authorization"), `Bearer ${session.session_token}`);
  assert.equal(retry.headers.get("authorization"), `Bearer ${lk.getTokens()?.sessionToken}`);
  assert.notEqual(lk.getTokens()?.sessionToken, session.session_token);
});

test("step-up: an old login gets reauthentication_required, not a refresh loop", async () => {
  const { lk, fetch } = await loggedIn("stepup");
  await sleep(2_500);
  for (const call of [() => lk.changePassword("a new password"), () => lk.trustDevice("any", "trusted")]) {
    const err = await call().then(
      () => assert.fail("expected reauthentication_required"),
      (e) => e,
    );
    assert.ok(err instanceof LatchkeyError);
    assert.equal(err.status, 401);
    assert.equal(err.code, "reauthentication_required");
  }
  assert.ok(fetch.calls("POST", "/v1/sessions/refresh").length <= 1, "at most the token's refresh");
  assert.equal(fetch.calls("POST", "/v1/account/password/finish").length, 0);
});

test("a locked name: 423 account_locked with retryAfter", async () => {
  const { username, password } = newCredentials("locked");
  const lk = createClient({ baseUrl: server.baseUrl });
  await lk.register(username, password);
  let err;
  for (let i = 0; i < 5 && err?.code !== "account_locked"; i++) {
    err = await lk.login(username, "wrong").catch((e) => e);
  }
  assert.ok(err instanceof LatchkeyError);
  assert.equal(err.status, 423);
  assert.equal(err.code, "account_locked");
  assert.equal(typeof err.retryAfter, "number");
  assert.ok(err.retryAfter >= 1, `retryAfter ${err.retryAfter}`);
});
