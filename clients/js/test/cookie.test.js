// Cookie mode (browsers on latchkey's own host), driven from Node by a fetch
// that keeps cookies and sends Sec-Fetch-Site: same-origin as a browser does.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createClient, LatchkeyError } from "../dist/index.js";
import { cookieFetch, newCredentials, recordingFetch, startServer } from "./support.js";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

test("cookie mode: login, whoami, refresh, logout; the device cookie makes the next login a known device", async () => {
  const { username, password } = newCredentials("cookie");
  const browser = cookieFetch();
  const fetch = recordingFetch(browser);
  const lk = createClient({ baseUrl: server.baseUrl, fetch, mode: "cookie" });
  await lk.register(username, password);

  const result = await lk.login(username, password, { deviceName: "a browser" });
  assert.equal(result.kind, "session");
  const { session } = result;
  assert.equal(session.session_token ?? undefined, undefined, "no token in the answer");
  assert.equal(session.refresh_token ?? undefined, undefined);
  assert.equal(session.device_token ?? undefined, undefined);
  assert.equal(session.new_device, true);
  assert.equal(lk.getTokens(), undefined, "the client holds no tokens");
  assert.deepEqual([...browser.jar.keys()].sort(), ["__Host-lk_device", "__Host-lk_refresh", "__Host-lk_session"]);
  assert.equal(fetch.calls("POST", "/v1/login/finish")[0].body.session_cookie, true);

  const me = await lk.whoami();
  assert.equal(me.username, username);
  assert.equal(me.session_id, session.session_id);

  const refreshCookie = browser.jar.get("__Host-lk_refresh");
  const rotated = await lk.refresh();
  assert.equal(rotated.session_id, session.session_id);
  assert.deepEqual(fetch.calls("POST", "/v1/sessions/refresh")[0].body, {});
  assert.notEqual(browser.jar.get("__Host-lk_refresh"), refreshCookie, "the refresh cookie rotated");
  assert.equal((await lk.whoami()).session_id, session.session_id);

  await lk.logout();
  assert.equal(browser.jar.has("__Host-lk_session"), false);
  assert.equal(browser.jar.has("__Host-lk_device"), true, "the device cookie stays");
  const err = await lk.whoami().catch((e) => e);
  assert.ok(err instanceof LatchkeyError);
  assert.equal(err.status, 401);

  const again = await lk.login(username, password);
  assert.equal(again.kind, "session");
  assert.equal(again.session.new_device, false, "the device cookie was sent");
  assert.equal(again.session.device_id, session.device_id);

  for (const request of fetch.requests) {
    assert.equal(request.headers.get("x-latchkey-csrf"), "1", `${request.method} ${request.path}: CSRF header`);
    assert.equal(request.headers.get("authorization"), null, `${request.method} ${request.path}: no bearer`);
    assert.equal(request.body?.device_token, undefined, `${request.method} ${request.path}: no device_token`);
  }
});

test("cookie mode without the same-origin signal is refused as CSRF", async () => {
  const { username, password } = newCredentials("csrf");
  const lk = createClient({ baseUrl: server.baseUrl, mode: "cookie" }); // Node's fetch: no Sec-Fetch-Site
  await lk.register(username, password);
  const err = await lk.login(username, password).catch((e) => e);
  assert.ok(err instanceof LatchkeyError);
  assert.equal(err.status, 403);
  assert.equal(err.code, "csrf_rejected");
});
