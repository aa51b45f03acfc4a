// Starts and stops a real latchkey process for the interoperability tests.
//
// The binary is $LATCHKEY_BIN, else <repo>/target/debug/latchkey, built with
// `cargo build --bin latchkey` when it is missing. Each server gets a free
// loopback port, a fresh data directory, a random master password and (for
// the Postgres + Redis setup) a fresh database and Redis key prefix, all
// removed again by stop(). `cli(args)` runs the same binary with the
// server's settings (e.g. `admin grant NAME`, the only way to make an admin).

import { spawn, execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

const HEALTH_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 10_000;
const CLI_TIMEOUT_MS = 60_000;
const OUTPUT_LIMIT = 64 * 1024;

export const adminDatabaseUrl = () =>
  process.env.LATCHKEY_TEST_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
export const testRedisUrl = () => process.env.LATCHKEY_TEST_REDIS_URL || "redis://127.0.0.1:6379";

const hex = (bytes) => randomBytes(bytes).toString("hex");

let binaryPromise;

/** The latchkey binary, built once per test process if it is missing. */
export function latchkeyBinary() {
  binaryPromise ??= (async () => {
    if (process.env.LATCHKEY_BIN) {
      const bin = path.resolve(process.env.LATCHKEY_BIN);
      if (!existsSync(bin)) throw new Error(`LATCHKEY_BIN=${bin} does not exist`);
      return bin;
    }
    const bin = path.join(repoRoot, "target", "debug", "latchkey");
    if (!existsSync(bin)) {
      console.error(`# ${bin} is missing: running cargo build --bin latchkey in ${repoRoot}`);
      await run("cargo", ["build", "--bin", "latchkey"], { cwd: repoRoot, stdio: "inherit" });
      if (!existsSync(bin)) throw new Error(`cargo build --bin latchkey did not produce ${bin}`);
    }
    return bin;
  })();
  return binaryPromise;
}

function run(cmd, args, options) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, options);
    child.on("error", (err) => reject(new Error(`${cmd}: ${err.message}`)));
    child.on("exit", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(" ")} failed (${signal ?? `exit ${code}`})`)),
    );
  });
}

/** A loopback port nobody listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function psql(url, sql) {
  try {
    await execFileP("psql", [url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], {
      env: { ...process.env, PGCONNECT_TIMEOUT: "10" },
    });
  } catch (err) {
    throw new Error(`psql ${JSON.stringify(sql)} failed: ${(err.stderr || err.message).trim()}`);
  }
}

/** The admin URL with its database name replaced (query string kept). */
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Removes the Redis keys under `prefix:` (best effort; needs redis-cli). */
async function dropRedisPrefix(url, prefix) {
  let keys;
  try {
    const { stdout } = await execFileP("redis-cli", ["-u", url, "--scan", "--pattern", `${prefix}:*`]);
    keys = stdout.split("\n").filter(Boolean);
  } catch {
    return; // no redis-cli, or Redis is gone: the keys expire on their own.
  }
  for (let i = 0; i < keys.length; i += 500) {
    await execFileP("redis-cli", ["-u", url, "UNLINK", ...keys.slice(i, i + 500)]).catch(() => {});
  }
}

/**
 * Starts latchkey. `backend` is "embedded" (SQLite + in-process store) or
 * "postgres-redis"; `settings` are further LATCHKEY_* variables for it
 * (e.g. a lower lockout threshold); a value may be a function of the port
 * the server gets (e.g. an origin). Resolves to { baseUrl, stop(), output(),
 * cli(args) }; cli runs `latchkey ARGS...` with the server's settings and
 * resolves to its standard output.
 */
export async function startLatchkey(backend, { settings = {} } = {}) {
  for (const name of Object.keys(settings)) {
    if (!/^LATCHKEY_[A-Z0-9_]+$/.test(name)) throw new Error(`not a latchkey setting: ${name}`);
  }
  const bin = await latchkeyBinary();
  const cleanups = [];
  const cleanup = async () => {
    const errors = [];
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    cleanups.length = 0;
    if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join("; "));
  };

  try {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "latchkey-interop-"));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));

    // Only this test's settings: a developer's LATCHKEY_* (config file,
    // database URL, ...) must not leak into the server under test.
    const env = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (!k.startsWith("LATCHKEY_") || k === "LATCHKEY_LOG") env[k] = v;
    }
    Object.assign(env, {
      LATCHKEY_ENV: "development",
      LATCHKEY_DATA_DIR: dataDir,
      LATCHKEY_MASTER_PASSWORD: `interop-${hex(24)}`,
      LATCHKEY_KEYRING__PBKDF2_ITERATIONS: "1000",
    });
    // A setting may depend on the port (a function of it): set per attempt below.
    const perPort = Object.entries(settings).filter(([, v]) => typeof v === "function");
    for (const [k, v] of Object.entries(settings)) if (typeof v !== "function") env[k] = v;

    if (backend === "postgres-redis") {
      const admin = adminDatabaseUrl();
      // Named with its creation time: the Rust tests drop it once it is old,
      // should an interrupted run leave it behind.
      const db = `lk_test_interop_${Math.floor(Date.now() / 1000)}_${hex(8)}`;
      await psql(admin, `CREATE DATABASE "${db}"`);
      cleanups.push(() => psql(admin, `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`));
      const redisUrl = testRedisUrl();
      const prefix = `lki${hex(8)}`;
      cleanups.push(() => dropRedisPrefix(redisUrl, prefix));
      Object.assign(env, {
        LATCHKEY_DATABASE_URL: withDatabase(admin, db),
        LATCHKEY_REDIS_URL: redisUrl,
        LATCHKEY_REDIS_PREFIX: prefix,
      });
    } else if (backend !== "embedded") {
      throw new Error(`unknown backend ${backend}`);
    }

    // The free port can be taken between picking and binding: try again then.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      env.LATCHKEY_BIND = `127.0.0.1:${port}`;
      for (const [k, v] of perPort) env[k] = String(v(port));
      try {
        const server = await spawnServer(bin, env, `http://127.0.0.1:${port}`);
        cleanups.push(() => server.kill());
        const cli = (args) => runCli(bin, args, { ...env });
        return { baseUrl: server.baseUrl, output: server.output, stop: cleanup, cli };
      } catch (err) {
        if (attempt < 3 && /address already in use|AddrInUse/i.test(err.message)) continue;
        throw err;
      }
    }
  } catch (err) {
    await cleanup().catch(() => {});
    throw err;
  }
}

/** `latchkey ARGS...` with `env`; resolves to its standard output. */
async function runCli(bin, args, env) {
  try {
    const { stdout } = await execFileP(bin, args, { env, timeout: CLI_TIMEOUT_MS });
    return stdout;
  } catch (err) {
    const why = err.killed ? `timed out after ${CLI_TIMEOUT_MS / 1000} s` : `exit ${err.code ?? err.signal}`;
    throw new Error(`latchkey ${args.join(" ")} failed (${why}): ${(err.stderr || err.message).trim()}`);
  }
}

async function spawnServer(bin, env, baseUrl) {
  const child = spawn(bin, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const collect = (chunk) => {
    output += chunk.toString("utf8");
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);

  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      exited = signal ?? `exit code ${code}`;
      resolve();
    });
    child.on("error", (err) => {
      exited = `spawn error: ${err.message}`;
      resolve();
    });
  });
  // If the test process dies first, do not leave a server behind.
  const onExit = () => child.kill("SIGKILL");
  process.once("exit", onExit);

  const kill = async () => {
    process.removeListener("exit", onExit);
    if (exited === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await exitPromise;
      clearTimeout(timer);
    }
  };

  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  for (;;) {
    if (exited !== null) {
      await kill();
      throw new Error(`latchkey exited before answering /healthz (${exited}); its output:\n${output}`);
    }
    try {
      const res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await kill();
      throw new Error(`latchkey did not answer 200 on /healthz within ${HEALTH_TIMEOUT_MS / 1000} s; its output:\n${output}`);
    }
    await sleep(100);
  }
  return { baseUrl, kill, output: () => output };
}
