// Runs schemathesis against a latchkey it starts the way the interop tests
// do (tests/interop/support/latchkey.js: the embedded default, a free
// loopback port, a fresh data directory, a random master password), with a
// configured service token and an admin's session, so that the
// authenticated routes are exercised past 401.
//
//   node tests/schemathesis/run.mjs SCHEMATHESIS [ARGS...]
//
// The session comes from a small token service on another loopback port
// that hooks.py asks before each case: it answers the current session token
// while whoami accepts it, else logs in again (registering and granting
// admin anew when a case deleted the account). Exits with schemathesis's
// status.

import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { startLatchkey } from "../interop/support/latchkey.js";
import { Api, Device, hex } from "../interop/support/client.js";

const [schemathesis, ...args] = process.argv.slice(2);
if (!schemathesis) {
  console.error("usage: node tests/schemathesis/run.mjs SCHEMATHESIS [ARGS...]");
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const serviceToken = `schemathesis-service-${hex(16)}`;

// Generous limits: every case comes from one address, far faster than any
// client, and a 429 (documented) would hide what is behind it, including
// the logins of the token service. And a namespace for the rate-limit API.
const configDir = await mkdtemp(path.join(os.tmpdir(), "latchkey-schemathesis-"));
const config = path.join(configDir, "latchkey.toml");
const rule = '{ limit = 100000, window = "60s" }';
const limits = `{ per_ip = ${rule}, per_username = ${rule}, per_ip_username = ${rule} }`;
await writeFile(
  config,
  [
    "[ratelimit]",
    "prefilter_per_second = 10000",
    "prefilter_burst = 10000",
    `bad_tokens = ${rule}`,
    ...["registration", "login_start", "login_finish", "totp", "refresh"].map((name) => `${name} = ${limits}`),
    "[[ratelimit.namespaces]]",
    'name = "api"',
    "limit = 100",
    'window = "60s"',
    "",
  ].join("\n"),
);

const server = await startLatchkey("embedded", {
  settings: {
    LATCHKEY_CONFIG: config,
    LATCHKEY_SERVICE_TOKENS: serviceToken,
  },
});
const api = new Api(server.baseUrl);
const device = new Device({ name: "schemathesis" });

let account;
let token;
let logins = 0;

/** An admin account (made anew when a case deleted it) and a fresh session. */
async function login() {
  logins += 1;
  if (account) {
    const attempt = await api.attemptLogin(account.name, account.pw, device);
    if (attempt.kind === "session") return attempt.session.session_token;
  }
  account = await api.newUser("schemathesis");
  await server.cli(["admin", "grant", account.name]);
  return (await api.login(account.name, account.pw, device)).session_token;
}

async function currentToken() {
  if (token) {
    const res = await api.call("GET", "/v1/sessions/current", { token });
    if (res.status === 200) return token;
  }
  token = await login();
  return token;
}

// One request at a time: concurrent askers share one login.
let queue = Promise.resolve();
const tokens = http.createServer((req, res) => {
  const answer = (queue = queue.then(currentToken, currentToken));
  answer.then(
    (value) => res.writeHead(200, { "content-type": "text/plain" }).end(value),
    (err) => {
      console.error(`# schemathesis: no session: ${err?.stack ?? err}`);
      res.writeHead(500, { "content-type": "text/plain" }).end(String(err?.stack ?? err));
    },
  );
});
await new Promise((resolve) => tokens.listen(0, "127.0.0.1", resolve));

let status = 1;
try {
  await currentToken();
  const child = spawn(schemathesis, ["run", `${server.baseUrl}/openapi.json`, ...args], {
    stdio: "inherit",
    env: {
      ...process.env,
      PYTHONPATH: [here, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter),
      SCHEMATHESIS_HOOKS: "hooks",
      LATCHKEY_SCHEMATHESIS_TOKENS: `http://127.0.0.1:${tokens.address().port}/`,
      LATCHKEY_SCHEMATHESIS_SERVICE_TOKEN: serviceToken,
    },
  });
  const stop = () => child.kill("SIGTERM");
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  status = await new Promise((resolve) => {
    child.on("error", (err) => {
      console.error(`${schemathesis}: ${err.message}`);
      resolve(1);
    });
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
  console.error(`# schemathesis: ${logins} login(s) for the admin session`);
} catch (err) {
  console.error(err?.stack ?? err);
  console.error(`# latchkey's output:\n${server.output()}`);
} finally {
  tokens.close();
  await server.stop();
  await rm(configDir, { recursive: true, force: true });
}
process.exit(status);
