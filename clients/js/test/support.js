// Helpers for the client's tests: a latchkey server (the interop tests'
// helper), fetch wrappers that record requests or keep cookies, names.

import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startLatchkey } from "../../../tests/interop/support/latchkey.js";

export const hex = (bytes) => randomBytes(bytes).toString("hex");
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh username and password. */
export function newCredentials(prefix) {
  return { username: `${prefix}-${hex(6)}`, password: `${prefix} password ${hex(8)}` };
}

// Every test registers from 127.0.0.1: more than the default 20
// registrations (start and finish count each) per address and hour. The
// per-endpoint rules are set in the configuration file only.
const CONFIG = `
[ratelimit.registration]
per_ip = { limit = 1000, window = "1h" }
`;

/**
 * Starts latchkey (embedded backend) for one test file, with the
 * registration limit and the request prefilter raised; `settings` are more
 * LATCHKEY_* variables. Resolves to the helper's server ({ baseUrl, cli,
 * stop }).
 */
export async function startServer(settings = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "latchkey-client-js-"));
  try {
    const config = path.join(dir, "latchkey.toml");
    await writeFile(config, CONFIG);
    const server = await startLatchkey("embedded", {
      settings: {
        LATCHKEY_CONFIG: config,
        LATCHKEY_RATELIMIT__PREFILTER_PER_SECOND: "1000",
        LATCHKEY_RATELIMIT__PREFILTER_BURST: "1000",
        ...settings,
      },
    });
    const stop = server.stop;
    return { ...server, stop: () => stop().finally(() => rm(dir, { recursive: true, force: true })) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The request as the server will see it: method, path, query, headers and JSON body. */
async function describe(request) {
  const url = new URL(request.url);
  const text = request.body === null ? "" : await request.clone().text();
  return {
    method: request.method,
    path: url.pathname,
    search: url.search,
    headers: request.headers,
    body: text ? JSON.parse(text) : undefined,
  };
}

/**
 * A fetch that records every request (`.requests`) and passes it on to
 * `inner`; `.calls(method, path)` counts the recorded ones.
 */
export function recordingFetch(inner = globalThis.fetch) {
  const requests = [];
  const wrapped = async (input, init) => {
    const request = new Request(input, init);
    requests.push(await describe(request));
    return inner(request);
  };
  wrapped.requests = requests;
  wrapped.calls = (method, path) => requests.filter((r) => r.method === method && r.path === path);
  wrapped.clear = () => requests.splice(0);
  return wrapped;
}

/**
 * A fetch that behaves like a browser on latchkey's own origin: it keeps the
 * cookies the server sets (`.jar`, name -> value; attributes are not
 * checked) and sends them back, and sends `Sec-Fetch-Site: same-origin`,
 * which Node's fetch does not.
 */
export function cookieFetch(inner = globalThis.fetch) {
  const jar = new Map();
  const wrapped = async (input, init) => {
    const request = new Request(input, init);
    const headers = new Headers(request.headers);
    headers.set("sec-fetch-site", "same-origin");
    if (jar.size > 0) headers.set("cookie", [...jar].map(([name, value]) => `${name}=${value}`).join("; "));
    const body = request.body === null ? undefined : await request.text();
    const response = await inner(new Request(request.url, { method: request.method, headers, body }));
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(";").map((part) => part.trim());
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      const gone = attributes.some((a) => /^max-age=(0|-)/i.test(a)) || value === "";
      if (gone) jar.delete(name);
      else jar.set(name, value);
    }
    return response;
  };
  wrapped.jar = jar;
  return wrapped;
}
