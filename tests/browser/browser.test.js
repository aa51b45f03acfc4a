// latchkey's pages in a real browser: Debian's Chromium driven by
// playwright-core (no browser download), against a latchkey process started
// by the interop tests' harness. A user signs up and in, turns TOTP on with
// the secret read from the page (codes from the independent npm library
// otpauth), signs out and in again with a code, ends another session, changes
// the password; an admin (made with `latchkey admin grant`) lists users,
// locks and unlocks one, blocks a device and reads the audit log; a stale
// login asks for the password again (step-up); a passkey is added on the page
// with Chromium's virtual authenticator (DevTools protocol), used at sign-in,
// for step-up, seen by an admin and removed. Every page is checked for its
// CSP header, CSP violations on the console, and requests to other origins.
// Screenshots of each state go to tests/browser/screenshots/.
//
// The pages are opened at http://localhost:PORT: Chromium counts localhost
// as a secure context, so the service's Secure and __Host- cookies work over
// plain HTTP there (and the test checks they do).

import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import * as OTPAuth from "otpauth";
import { chromium } from "playwright-core";

import { startLatchkey } from "../interop/support/latchkey.js";

const CHROMIUM = process.env.LATCHKEY_CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const SHOTS = path.join(path.dirname(fileURLToPath(import.meta.url)), "screenshots");
const TIMEOUT = 30_000;
const TOTP_PERIOD = 30;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const hex = (n) => [...crypto.getRandomValues(new Uint8Array(n))].map((b) => b.toString(16).padStart(2, "0")).join("");

let browser;
const watchers = [];

before(async () => {
  await mkdir(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
});

// Every page is watched: no CSP violation on its console, no uncaught error,
// no request to another origin. Checked after each test.
afterEach(() => {
  const found = watchers.splice(0);
  for (const w of found) {
    assert.deepEqual(w.csp, [], `CSP violations on ${w.name}`);
    assert.deepEqual(w.errors, [], `uncaught errors on ${w.name}`);
    assert.deepEqual(w.foreign, [], `requests to other origins from ${w.name}`);
  }
});

/** A latchkey server and its pages' base URL on localhost. */
async function serve(settings = {}) {
  const server = await startLatchkey("embedded", { settings });
  const base = server.baseUrl.replace("//127.0.0.1:", "//localhost:");
  return { server, base };
}

/** A fresh browser profile (its own cookies: another device) with one watched page. */
async function openBrowser(base, name) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const w = { name, csp: [], errors: [], foreign: [], console: [] };
  const origin = new URL(base).origin;
  page.on("console", (msg) => {
    w.console.push(`${msg.type()}: ${msg.text()}`);
    if (/Content.Security.Policy/i.test(msg.text())) w.csp.push(msg.text());
  });
  page.on("pageerror", (err) => w.errors.push(err.message));
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (url.protocol !== "data:" && url.origin !== origin) w.foreign.push(req.url());
  });
  watchers.push(w);
  return { context, page, watch: w };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

const visible = (page, selector) => page.locator(selector).waitFor({ state: "visible" });
const hidden = (page, selector) => page.locator(selector).waitFor({ state: "hidden" });
const text = async (page, selector) => ((await page.locator(selector).textContent()) ?? "").trim();

/** Waits until the status line reads something matching `pattern`; returns it. */
async function status(page, pattern) {
  await page.waitForFunction(
    ([source, flags]) => new RegExp(source, flags).test(document.querySelector("#status")?.textContent ?? ""),
    [pattern.source, pattern.flags],
  );
  return text(page, "#status");
}

async function register(page, base, name, pw) {
  await page.goto(`${base}/ui/`);
  await visible(page, "#register-form");
  await page.fill("#register-username", name);
  await page.fill("#register-password", pw);
  await page.fill("#register-confirm", pw);
  await page.click("#register-form button[type=submit]");
  await status(page, /created|error|taken|exists|conflict/i);
  assert.match(await text(page, "#status"), new RegExp(`Account ${name} created`));
}

/** Fills and sends the sign-in form (the page must show it). */
async function submitSignIn(page, name, pw) {
  await visible(page, "#sign-in-form");
  await page.fill("#sign-in-username", name);
  await page.fill("#sign-in-password", pw);
  await page.click("#sign-in-form button[type=submit]");
}

/** Waits for the signed-in view, failing at once with the page's error if one shows. */
async function signedInView(page) {
  await page.waitForFunction(
    () =>
      !document.querySelector("#signed-in")?.hidden || document.querySelector("#status")?.dataset.kind === "error",
  );
  const error = await page.evaluate(() =>
    document.querySelector("#status")?.dataset.kind === "error" ? document.querySelector("#status").textContent : null,
  );
  assert.equal(error, null, "the page reports an error instead of signing in");
}

async function signIn(page, name, pw) {
  await submitSignIn(page, name, pw);
  await signedInView(page);
  assert.equal(await text(page, "#me-username"), name);
}

async function signOut(page) {
  await page.click("#sign-out");
  await visible(page, "#signed-out");
  await status(page, /Signed out/);
}

function totpFor(secret) {
  return new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), algorithm: "SHA1", digits: 6, period: TOTP_PERIOD });
}

/** Waits until the current TOTP step has at least 12 s left. */
async function awaitFreshStep() {
  while (Math.floor(Date.now() / 1000) % TOTP_PERIOD >= 18) await sleep(250);
}

describe("the self-service page", () => {
  let server;
  let base;
  before(async () => {
    ({ server, base } = await serve());
  });
  after(async () => {
    await server?.stop();
  });

  const alice = { name: `alice-${hex(4)}`, pw: `alice password ${hex(6)}` };
  const bob = { name: `bob-${hex(4)}`, pw: `bob password ${hex(6)}` };

  it("is served with its CSP and loads nothing from outside", async () => {
    const { context, page } = await openBrowser(base, "/ui/ signed out");
    const res = await page.goto(`${base}/ui/`);
    assert.equal(res.status(), 200);
    const csp = res.headers()["content-security-policy"];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
    assert.equal(res.headers()["x-content-type-options"], "nosniff");
    await visible(page, "#sign-in-form");
    assert.equal(await page.title(), "latchkey: your account");
    await shot(page, "01-signed-out");
    await context.close();
  });

  it("registers, signs in with OPAQUE and shows who is signed in, with the session in HttpOnly cookies", async () => {
    const { context, page } = await openBrowser(base, "/ui/ alice");
    await register(page, base, alice.name, alice.pw);
    await shot(page, "02-registered");
    await signIn(page, alice.name, alice.pw);
    assert.match(await text(page, "#me-aal"), /^aal1/);
    assert.ok(!Number.isNaN(Date.parse(await page.locator("#me-auth-time time").getAttribute("datetime"))));
    await visible(page, "#sessions table");
    await visible(page, "#devices table");
    await shot(page, "03-signed-in");

    // Secure and __Host- cookies over plain HTTP on localhost, out of the
    // page's reach.
    const cookies = await context.cookies([`${base}/`]);
    const session = cookies.find((c) => c.name === "__Host-lk_session");
    assert.ok(session, `a session cookie: ${cookies.map((c) => c.name).join(", ")}`);
    assert.equal(session.httpOnly, true);
    assert.equal(session.secure, true);
    assert.equal(session.path, "/");
    assert.equal(session.sameSite, "Lax");
    const refresh = cookies.find((c) => c.name === "__Host-lk_refresh");
    assert.ok(refresh, "a refresh cookie");
    assert.equal(refresh.httpOnly, true);
    assert.equal(refresh.secure, true);
    assert.equal(refresh.path, "/");
    assert.equal(refresh.sameSite, "Strict");
    assert.ok(cookies.some((c) => c.name === "__Host-lk_device" && c.httpOnly), "a device cookie");
    assert.equal(await page.evaluate(() => document.cookie), "", "no cookie is visible to scripts");
    assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0, "nothing stored");

    // A reload keeps the session.
    await page.reload();
    await visible(page, "#signed-in");
    await context.close();
  });

  it("turns TOTP on from the page's secret, signs in with password and code, and turns it off", async () => {
    const { context, page } = await openBrowser(base, "/ui/ alice TOTP");
    await page.goto(`${base}/ui/`);
    await signIn(page, alice.name, alice.pw);
    await visible(page, "#totp-off");
    await page.click("#totp-enroll");
    await visible(page, "#totp-enrolment");
    await visible(page, "#totp-qr canvas");
    await shot(page, "04-totp-enrolment");
    const secret = (await text(page, "#totp-secret")).replace(/\s+/g, "");
    assert.match(secret, /^[A-Z2-7]{32,}$/, "a base32 secret of at least 160 bits");
    const totp = totpFor(secret);

    // Confirm with the previous step's code (one step of skew is accepted),
    // so the login below can use the current step's without waiting.
    await awaitFreshStep();
    const now = Date.now();
    await page.fill("#totp-confirm-code", totp.generate({ timestamp: now - TOTP_PERIOD * 1000 }));
    await page.click("#totp-confirm-form button[type=submit]");
    await visible(page, "#recovery");
    const codes = await page.locator("#recovery-codes li").allTextContents();
    assert.equal(codes.length, 10);
    await status(page, /is on/);
    assert.match(await text(page, "#me-aal"), /^aal2/);
    await shot(page, "05-recovery-codes");
    await page.click("#recovery-done");
    await hidden(page, "#recovery");
    await visible(page, "#totp-on");

    await signOut(page);
    await submitSignIn(page, alice.name, alice.pw);
    await visible(page, "#totp-form");
    await shot(page, "06-second-factor");
    await page.fill("#totp-code", "000000" === totp.generate({ timestamp: now }) ? "111111" : "000000");
    await page.click("#totp-form button[type=submit]");
    await status(page, /code|not right|invalid|Unauthorized/i);
    await page.fill("#totp-code", totp.generate({ timestamp: now }));
    await page.click("#totp-form button[type=submit]");
    await visible(page, "#signed-in");
    assert.match(await text(page, "#me-aal"), /^aal2/);

    // A recovery code works once as well.
    await signOut(page);
    await submitSignIn(page, alice.name, alice.pw);
    await visible(page, "#totp-form");
    await page.fill("#totp-code", codes[0]);
    await page.click("#totp-form button[type=submit]");
    await visible(page, "#signed-in");
    await visible(page, "#totp-on");

    // Turning it off takes a code of a later step than the login's.
    const usedStep = Math.floor(now / 1000 / TOTP_PERIOD);
    while (Math.floor(Date.now() / 1000 / TOTP_PERIOD) <= usedStep) await sleep(250);
    await page.fill("#totp-disable-code", totp.generate());
    await page.click("#totp-disable-form button[type=submit]");
    await status(page, /is off/);
    await visible(page, "#totp-off");
    // The session stays aal2, yet the page knows TOTP is off after a reload.
    await page.reload();
    await visible(page, "#signed-in");
    await visible(page, "#totp-off");
    await context.close();
  });

  it("lists sessions, marks the current one and ends another", async () => {
    const first = await openBrowser(base, "/ui/ bob first");
    await register(first.page, base, bob.name, bob.pw);
    await signIn(first.page, bob.name, bob.pw);
    const second = await openBrowser(base, "/ui/ bob second");
    await second.page.goto(`${base}/ui/`);
    await signIn(second.page, bob.name, bob.pw);

    await first.page.reload();
    await visible(first.page, "#sessions table");
    const rows = first.page.locator("#sessions tbody tr");
    assert.equal(await rows.count(), 2);
    assert.equal(await first.page.locator("#sessions tbody tr.current").count(), 1);
    assert.match(await first.page.locator("#sessions tbody tr.current").textContent(), /This session/);
    await shot(first.page, "07-sessions");

    await first.page.locator("#sessions button", { hasText: "End session" }).click();
    await status(first.page, /session has ended/);
    await first.page.waitForFunction(() => document.querySelectorAll("#sessions tbody tr").length === 1);

    // The other browser is signed out (its refresh is refused too).
    await second.page.reload();
    await visible(second.page, "#signed-out");
    await first.context.close();
    await second.context.close();
  });

  it("trusts this browser's device and changes the password; the new one signs in", async () => {
    const { context, page } = await openBrowser(base, "/ui/ bob password");
    await page.goto(`${base}/ui/`);
    await signIn(page, bob.name, bob.pw);
    const here = page.locator("#devices tbody tr", { hasText: "This browser" });
    await here.getByRole("button", { name: /^Trust / }).click();
    await status(page, /is trusted/);
    await page.waitForFunction(() => /trusted/.test(document.querySelector("#devices tbody")?.textContent ?? ""));

    const newPw = `bob new password ${hex(6)}`;
    await page.fill("#password-new", newPw);
    await page.fill("#password-confirm", newPw);
    await page.click("#password-form button[type=submit]");
    await status(page, /password is changed/);
    await shot(page, "08-password-changed");
    await signOut(page);

    await submitSignIn(page, bob.name, bob.pw);
    await status(page, /not right|invalid/i);
    await shot(page, "09-wrong-password");
    await signIn(page, bob.name, newPw);
    bob.pw = newPw;
    await context.close();
  });
});

describe("the admin console", () => {
  let server;
  let base;
  before(async () => {
    ({ server, base } = await serve());
  });
  after(async () => {
    await server?.stop();
  });

  const admin = { name: `root-${hex(4)}`, pw: `admin password ${hex(6)}` };
  const dave = { name: `dave-${hex(4)}`, pw: `dave password ${hex(6)}` };

  it("tells a non-admin it is not for them", async () => {
    const { context, page } = await openBrowser(base, "/ui/admin dave");
    await register(page, base, dave.name, dave.pw);
    await signIn(page, dave.name, dave.pw);
    await page.goto(`${base}/ui/admin`);
    await visible(page, "#denied");
    assert.match(await text(page, "#denied-text"), /does not have the admin role/);
    await shot(page, "10-admin-denied");
    await context.close();
  });

  it("signs an admin in through the return path and lists, locks, unlocks, blocks and audits", async () => {
    const { context, page } = await openBrowser(base, "/ui/admin admin");
    await register(page, base, admin.name, admin.pw);
    await server.cli(["admin", "grant", admin.name]);

    // Signed out, the console sends the admin to sign in and back.
    await page.goto(`${base}/ui/admin`);
    await visible(page, "#denied-link");
    await page.click("#denied-link");
    await page.waitForURL(/\/ui\/\?return_to=/);
    await submitSignIn(page, admin.name, admin.pw);
    await page.waitForURL(`${base}/ui/admin`);
    await visible(page, "#console");
    await visible(page, "#users table");
    const names = await page.locator("#users tbody tr td:first-child").allTextContents();
    assert.ok(names.includes(admin.name) && names.includes(dave.name), names.join(", "));
    await visible(page, "#audit table");
    await visible(page, "#keys table >> nth=0");
    await shot(page, "11-admin-console");

    // Search narrows the list.
    await page.fill("#users-query", dave.name);
    await page.waitForFunction(() => document.querySelectorAll("#users tbody tr").length === 1);

    // dave, signed in elsewhere.
    const daves = await openBrowser(base, "/ui/ dave elsewhere");
    await daves.page.goto(`${base}/ui/`);
    await signIn(daves.page, dave.name, dave.pw);

    await page.getByRole("button", { name: `Open ${dave.name}` }).click();
    await visible(page, "#user");
    await visible(page, "#user-devices table");
    assert.match(await text(page, "#user-title"), new RegExp(dave.name));

    // Lock with a reason: dave's sessions end and the sign-in is refused.
    await page.fill("#lock-reason", "browser test lock");
    await page.click("#lock-form button[type=submit]");
    await status(page, /is locked/);
    await page.waitForFunction(() => /browser test lock/.test(document.querySelector("#user-facts")?.textContent ?? ""));
    await shot(page, "12-admin-user-locked");
    await daves.page.reload();
    await visible(daves.page, "#signed-out");
    await submitSignIn(daves.page, dave.name, dave.pw);
    await status(daves.page, /locked/i);
    await shot(daves.page, "13-locked-sign-in");

    await page.click("#unlock");
    await status(page, /is unlocked/);
    await signIn(daves.page, dave.name, dave.pw);

    // Block dave's device: its sessions end and its logins are refused.
    const deviceRow = page.locator("#user-devices tbody tr").first();
    await deviceRow.locator("select").selectOption("blocked");
    await deviceRow.getByRole("button", { name: /^Set the trust/ }).click();
    await status(page, /is now blocked/);
    await page.waitForFunction(() => /blocked/.test(document.querySelector("#user-devices tbody")?.textContent ?? ""));
    await daves.page.reload();
    await visible(daves.page, "#signed-out");
    await submitSignIn(daves.page, dave.name, dave.pw);
    await status(daves.page, /blocked/i);

    // A reset token, shown once.
    await page.click("#issue-reset");
    await visible(page, "#reset-token-box");
    assert.match(await text(page, "#reset-token"), /^lk_t_/);
    await shot(page, "14-admin-reset-token");

    // The audit log, filtered.
    await page.fill("#audit-event", "account.lock");
    await page.click("#audit-filter button[type=submit]");
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll("#audit tbody tr")];
      return rows.length >= 1 && rows.every((r) => r.textContent.includes("account.lock"));
    });
    await page.fill("#audit-event", "");
    await page.click("#audit-filter button[type=submit]");
    await page.waitForFunction(() => /device\.trust/.test(document.querySelector("#audit tbody")?.textContent ?? ""));
    await shot(page, "15-admin-audit");

    // Rotating the data key.
    page.once("dialog", (d) => d.accept());
    await page.click("#rotate-data");
    await status(page, /new data key is active/);
    await daves.context.close();
    await context.close();
  });
});

describe("short-lived tokens and step-up", () => {
  let server;
  let base;
  before(async () => {
    // Session tokens live 2 s and a login is recent for 2 s, so both the
    // refresh by cookie and the step-up happen within the test.
    ({ server, base } = await serve({
      LATCHKEY_SESSIONS__TOKEN_LIFETIME: "2s",
      LATCHKEY_SESSIONS__REAUTH_WINDOW: "2s",
    }));
  });
  after(async () => {
    await server?.stop();
  });

  it("refreshes an expired session token by cookie", async () => {
    const frank = { name: `frank-${hex(4)}`, pw: `frank password ${hex(6)}` };
    const { context, page } = await openBrowser(base, "/ui/ refresh");
    await register(page, base, frank.name, frank.pw);
    await signIn(page, frank.name, frank.pw);
    const before = (await context.cookies(`${base}/`)).find((c) => c.name === "__Host-lk_session")?.value;
    await sleep(3_000);
    const refreshes = [];
    page.on("request", (req) => {
      if (req.url().endsWith("/v1/sessions/refresh")) refreshes.push(req.headers()["x-latchkey-csrf"]);
    });
    await page.reload();
    await visible(page, "#signed-in");
    await visible(page, "#sessions table");
    // whoami met the expired token: one refresh by cookie, with the CSRF header.
    assert.deepEqual(refreshes, ["1"]);
    const after = (await context.cookies(`${base}/`)).find((c) => c.name === "__Host-lk_session")?.value;
    assert.ok(after && after !== before, "a new session cookie");

    // Three tabs meet the expired token at once: they share the refresh
    // cookie, so they take turns (a Web Lock) and only one refreshes; a
    // second use of the same refresh token would end the session.
    await sleep(3_000);
    const tabs = [page, await context.newPage(), await context.newPage()];
    const posts = [];
    for (const tab of tabs) {
      tab.on("request", (req) => {
        if (req.url().endsWith("/v1/sessions/refresh")) posts.push(req.url());
      });
    }
    await Promise.all(tabs.map((tab) => tab.goto(`${base}/ui/`)));
    for (const tab of tabs) await visible(tab, "#sessions table");
    assert.equal(posts.length, 1, `one refresh for three tabs: ${posts.length}`);
    await page.reload();
    await visible(page, "#sessions table");
    for (const tab of tabs.slice(1)) await tab.close();

    // Signing out with an expired token still ends the session and clears
    // both cookies (the page refreshes first), so a reload stays signed out.
    await sleep(3_000);
    await signOut(page);
    const left = (await context.cookies([`${base}/`])).map((c) => c.name);
    assert.ok(!left.includes("__Host-lk_session") && !left.includes("__Host-lk_refresh"), left.join(", "));
    await page.reload();
    await visible(page, "#signed-out");
    await context.close();
  });

  it("asks for the password again when the login is not recent, then goes on", async () => {
    const erin = { name: `erin-${hex(4)}`, pw: `erin password ${hex(6)}` };
    const { context, page } = await openBrowser(base, "/ui/ step-up");
    await register(page, base, erin.name, erin.pw);
    await signIn(page, erin.name, erin.pw);
    await sleep(3_000);
    await page.click("#totp-enroll");
    await visible(page, "#stepup");
    await shot(page, "16-step-up");
    await page.fill("#stepup-password", "not the password");
    await page.click("#stepup-submit");
    await page.waitForFunction(() => /not right/.test(document.querySelector("#stepup-status")?.textContent ?? ""));
    await page.fill("#stepup-password", erin.pw);
    await page.click("#stepup-submit");
    await visible(page, "#totp-enrolment");
    // The replaced session was ended.
    await page.reload();
    await visible(page, "#sessions table");
    assert.equal(await page.locator("#sessions tbody tr").count(), 1);
    await context.close();
  });
});

describe("passkeys (WebAuthn)", () => {
  let server;
  let base;
  before(async () => {
    // The relying party is this server's own origin; a login is recent for
    // 3 s, so the step-up by passkey happens within the test.
    ({ server, base } = await serve({
      LATCHKEY_WEBAUTHN__RP_ID: "localhost",
      LATCHKEY_WEBAUTHN__RP_ORIGIN: (port) => `http://localhost:${port}`,
      LATCHKEY_SESSIONS__REAUTH_WINDOW: "3s",
    }));
  });
  after(async () => {
    await server?.stop();
  });

  /** Chromium's virtual authenticator (DevTools protocol) for this page: a passkey with user verification. */
  async function virtualAuthenticator(context, page) {
    const cdp = await context.newCDPSession(page);
    await cdp.send("WebAuthn.enable", { enableUI: false });
    const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2",
        transport: "internal",
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    return {
      credentials: async () => (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials,
    };
  }

  it("adds a passkey on the page, signs out, signs in with password and passkey, steps up with it and removes it", async () => {
    const pat = { name: `pat-${hex(4)}`, pw: `pat password ${hex(6)}` };
    const { context, page } = await openBrowser(base, "/ui/ passkeys");
    const authenticator = await virtualAuthenticator(context, page);
    await register(page, base, pat.name, pat.pw);
    await signIn(page, pat.name, pat.pw);
    await visible(page, "#passkey-form");
    await page.waitForFunction(() => /no passkey yet/.test(document.querySelector("#passkeys")?.textContent ?? ""));

    await page.fill("#passkey-name", "Virtual key");
    await page.click("#passkey-add");
    await status(page, /passkey Virtual key was added|error|refused/i);
    assert.match(await text(page, "#status"), /passkey Virtual key was added/);
    await visible(page, "#passkeys table");
    assert.equal(await page.locator("#passkeys tbody tr").count(), 1);
    assert.match(await text(page, "#passkeys tbody tr"), /Virtual key/);
    assert.match(await text(page, "#me-aal"), /^aal2/, "the enrolling session proved a second factor");
    assert.equal((await authenticator.credentials()).length, 1, "the authenticator holds the passkey");
    await shot(page, "20-passkey-added");

    // An admin sees the passkey among pat's second factors.
    const root = { name: `root-${hex(4)}`, pw: `root password ${hex(6)}` };
    const admin = await openBrowser(base, "/ui/admin passkeys");
    await register(admin.page, base, root.name, root.pw);
    await server.cli(["admin", "grant", root.name]);
    await signIn(admin.page, root.name, root.pw);
    await admin.page.goto(`${base}/ui/admin`);
    await visible(admin.page, "#users table");
    await admin.page.getByRole("button", { name: `Open ${pat.name}` }).click();
    await visible(admin.page, "#user-factors table");
    const factor = await text(admin.page, "#user-factors tbody tr");
    assert.match(factor, /Passkey/);
    assert.match(factor, /Virtual key/);
    await shot(admin.page, "24-admin-second-factors");
    await admin.context.close();

    // Sign out, then password and passkey.
    await signOut(page);
    await submitSignIn(page, pat.name, pat.pw);
    await visible(page, "#totp-form");
    await visible(page, "#passkey-step");
    await hidden(page, "#code-step");
    await shot(page, "21-passkey-second-factor");
    await page.click("#passkey-sign-in");
    await signedInView(page);
    assert.match(await text(page, "#me-aal"), /^aal2/);
    const [{ signCount }] = await authenticator.credentials();
    assert.ok(signCount >= 1, "the authenticator signed");
    await visible(page, "#passkeys table");
    assert.doesNotMatch(await text(page, "#passkeys tbody tr"), /never/, "the last use is shown");

    // A stale login: the step-up dialog takes the passkey instead of the
    // password, and the same session goes on.
    const sessionBefore = (await context.cookies(`${base}/`)).find((c) => c.name === "__Host-lk_session")?.value;
    await sleep(4_000);
    await page.fill("#passkey-name", "Second");
    await page.click("#passkey-add");
    await visible(page, "#stepup");
    await visible(page, "#stepup-passkey");
    await shot(page, "22-step-up-with-passkey");
    await page.click("#stepup-passkey");
    // The retried registration asks the authenticator again, which holds
    // this account's passkey already: refused, and said so.
    await status(page, /registered already/);
    const sessionAfter = (await context.cookies(`${base}/`)).find((c) => c.name === "__Host-lk_session")?.value;
    assert.equal(sessionAfter, sessionBefore, "the step-up kept the session");

    // Removing it (the session is aal2 and recent again).
    await page.click("#passkeys tbody tr button");
    await status(page, /was removed/);
    assert.match(await text(page, "#passkeys"), /no passkey yet/);
    await shot(page, "23-passkey-removed");
    await signOut(page);
    await signIn(page, pat.name, pat.pw);
    await context.close();
  });
});
