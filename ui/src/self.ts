// The self-service page (/ui/): register, sign in (OPAQUE, then the second
// factor when on), and, signed in, the account: sessions, devices, TOTP,
// password change, sign out.

import { LatchkeyError, lk, refused, type WhoAmI } from "./api";
import { login } from "./auth";
import { busy, byId, clear, el, field, message, say, show, table, time } from "./dom";
import { createPasskey, passkeysSupported, usePasskey } from "./passkey";
import { qrCanvas } from "./qr";
import { Cancelled, factorOf, withStepUp } from "./stepup";

const status = byId("status");
let me: WhoAmI | null = null;
let mfaToken: string | null = null;

/** The `return_to` of the page's URL, if any. */
function returnTo(): string | null {
  return new URLSearchParams(location.search).get("return_to");
}

/** Goes back to the application that sent the user here, if one did. */
function leaveIfAsked(): boolean {
  const target = returnTo();
  if (target === null) return false;
  location.assign(`/ui/return?to=${encodeURIComponent(target)}`);
  return true;
}

async function whoami(): Promise<WhoAmI | null> {
  try {
    return await lk.whoami();
  } catch (err) {
    if (err instanceof LatchkeyError && err.status === 401) return null;
    throw err;
  }
}

/** Reads who is signed in (unless given) and shows the matching view. */
async function refreshView(known?: WhoAmI | null): Promise<void> {
  me = known === undefined ? await whoami() : known;
  show(byId("loading"), false);
  show(byId("nav"), me !== null);
  show(byId("signed-out"), me === null);
  show(byId("signed-in"), me !== null);
  if (me === null) return;
  byId("me-username").textContent = me.username;
  for (const input of document.querySelectorAll<HTMLInputElement>("input.account-name")) input.value = me.username;
  byId("me-aal").textContent = me.aal === "aal2" ? "aal2 (password and second factor)" : "aal1 (password)";
  clear(byId("me-auth-time"));
  byId("me-auth-time").append(time(me.auth_time));
  clear(byId("me-expires"));
  byId("me-expires").append(time(me.session_expires_at));
  await Promise.all([loadSessions(), loadDevices(), loadAccount(), loadPasskeys()]);
}

/** Whether TOTP is on and whether to offer the admin console: the caller's account. */
async function loadAccount(): Promise<void> {
  const account = await lk.account();
  show(byId("totp-on"), account.totp_enabled);
  show(byId("totp-off"), !account.totp_enabled);
  show(byId("admin-link"), account.roles.includes("admin"));
}

/** Runs a sensitive operation, asking for the password again when the server wants a recent login. */
function stepUp<T>(work: () => Promise<T>): Promise<T> {
  if (me === null) return work();
  return withStepUp(me.username, me.session_id, work);
}

/** Reports a failure unless the user cancelled the step-up. */
function report(err: unknown): void {
  if (err instanceof Cancelled) say(status, "Cancelled.");
  else say(status, message(err), "error");
}

// Signed out: sign in, second factor, register, reset.

async function signedIn(): Promise<void> {
  mfaToken = null;
  if (leaveIfAsked()) return;
  (byId<HTMLFormElement>("sign-in-form")).reset();
  (byId<HTMLFormElement>("totp-form")).reset();
  secondFactorStep(["totp"]);
  show(byId("totp-form"), false);
  show(byId("sign-in-form"), true);
  await refreshThenSay("Signed in.");
  byId("account-title").setAttribute("tabindex", "-1");
  byId("account-title").focus();
}

byId<HTMLFormElement>("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(form, status, async () => {
    say(status, "Signing in…");
    const result = await login(field(form, "username"), field(form, "password"));
    if (result.kind === "mfa") {
      mfaToken = result.mfaToken;
      show(form, false);
      secondFactorStep(result.methods);
      show(byId("totp-form"), true);
      say(status, "Password accepted. Now the second factor.");
      (result.methods.includes("totp") ? byId("totp-code") : byId("passkey-sign-in")).focus();
      return;
    }
    await signedIn();
  });
});

byId<HTMLFormElement>("totp-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  if (mfaToken === null) return;
  const token = mfaToken;
  void busy(form, status, async () => {
    try {
      await lk.loginTotp(token, factorOf(field(form, "code")));
    } catch (err) {
      if (err instanceof LatchkeyError && err.status === 401) {
        (form.elements.namedItem("code") as HTMLInputElement).select();
      }
      throw err;
    }
    await signedIn();
  });
});

/** Shows the second-factor inputs the user has: a code field, a passkey button, or both. */
function secondFactorStep(methods: string[]): void {
  const totp = methods.includes("totp");
  show(byId("code-step"), totp);
  byId<HTMLInputElement>("totp-code").required = totp;
  show(byId("totp-submit"), totp);
  show(byId("passkey-step"), methods.includes("webauthn"));
}

byId<HTMLButtonElement>("passkey-sign-in").addEventListener("click", (event) => {
  if (mfaToken === null) return;
  const token = mfaToken;
  void busy(event.currentTarget as HTMLButtonElement, status, async () => {
    say(status, "Waiting for the passkey…");
    const assertion = await usePasskey(await lk.loginWebauthnStart(token));
    await lk.loginWebauthnFinish(token, assertion);
    await signedIn();
  });
});

byId("totp-cancel").addEventListener("click", () => {
  mfaToken = null;
  byId<HTMLFormElement>("totp-form").reset();
  show(byId("totp-form"), false);
  show(byId("sign-in-form"), true);
  say(status, "");
  byId("sign-in-password").focus();
});

function passwordsMatch(form: HTMLFormElement): void {
  if (field(form, "password") !== field(form, "confirm")) {
    throw new Error("The two passwords are not the same.");
  }
}

byId<HTMLFormElement>("register-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(form, status, async () => {
    passwordsMatch(form);
    const username = field(form, "username");
    say(status, "Creating the account…");
    await lk.register(username, field(form, "password"));
    form.reset();
    (byId<HTMLInputElement>("sign-in-username")).value = username;
    say(status, `Account ${username} created. Sign in now.`, "ok");
    byId("sign-in-password").focus();
  });
});

byId<HTMLFormElement>("reset-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(form, status, async () => {
    passwordsMatch(form);
    say(status, "Setting the new password…");
    await lk.reset(field(form, "token").trim(), field(form, "password"));
    form.reset();
    say(status, "Your password is set. Sign in with it now.", "ok");
    byId("sign-in-username").focus();
  });
});

// Signed in.

byId<HTMLButtonElement>("sign-out").addEventListener("click", (event) => {
  void busy(event.currentTarget as HTMLButtonElement, status, async () => {
    // With an expired session token the client renews it first, so that
    // the refresh cookie does not outlive the sign-out.
    await lk.logout();
    await refreshThenSay("Signed out.");
    byId("sign-in-username").focus();
  });
});

function describeDevice(device: { name?: string | null } | null | undefined, userAgent: string | null | undefined): string {
  return device?.name || userAgent || "Unknown device";
}

/**
 * Reloads the view after a change, then says `text` (so the status line
 * speaks of what is shown). When the reload fails, the change is still
 * reported, with the reason the view is stale.
 */
async function refreshThenSay(text: string, reload: () => Promise<void> = refreshView): Promise<void> {
  try {
    await reload();
  } catch (err) {
    say(status, `${text} The page could not be refreshed: ${message(err)}`, "error");
    return;
  }
  say(status, text, "ok");
}

async function loadSessions(): Promise<void> {
  const sessions = await lk.sessions();
  const rows = sessions.map((s) => {
    const label = describeDevice(s.device, s.user_agent);
    const action = s.current
      ? el("span", { class: "badge" }, "This session")
      : el(
          "button",
          {
            type: "button",
            class: "secondary",
            "data-session": s.session_id,
            "aria-label": `End the session of ${label} from ${new Date(s.created_at).toLocaleString()}`,
          },
          "End session",
        );
    if (action instanceof HTMLButtonElement) {
      action.addEventListener("click", () => {
        void busy(action, status, async () => {
          await lk.revoke(s.session_id);
          await refreshThenSay("The session has ended.", loadSessions);
        });
      });
    }
    return [label, s.ip ?? "—", time(s.created_at), time(s.last_seen_at), s.aal, action];
  });
  const holder = byId("sessions");
  clear(holder);
  holder.append(table("Your sessions", ["Device", "IP address", "Signed in", "Last active", "Level", ""], rows));
  holder.querySelector("tbody")
    ?.querySelectorAll("tr")
    .forEach((tr, i) => {
      if (sessions[i]?.current) tr.classList.add("current");
    });
  byId<HTMLButtonElement>("revoke-others").disabled = sessions.length < 2;
}

byId<HTMLButtonElement>("revoke-others").addEventListener("click", (event) => {
  void busy(event.currentTarget as HTMLButtonElement, status, async () => {
    const revoked = await lk.revokeOthers();
    await refreshThenSay(`${revoked} other session${revoked === 1 ? "" : "s"} ended.`, loadSessions);
  });
});

async function loadDevices(): Promise<void> {
  const devices = await lk.devices();
  const here = me?.device?.device_id;
  const rows = devices.map((d) => {
    const label = describeDevice(d, d.user_agent);
    const actions = el("span", { class: "row-actions" });
    if (d.trust !== "blocked") {
      const next = d.trust === "trusted" ? "unknown" : "trusted";
      const toggle = el(
        "button",
        { type: "button", class: "secondary", "aria-label": `${next === "trusted" ? "Trust" : "Stop trusting"} ${label}` },
        next === "trusted" ? "Trust" : "Stop trusting",
      );
      toggle.addEventListener("click", () => {
        void busy(toggle, status, async () => {
          try {
            await stepUp(() => lk.trustDevice(d.device_id, next));
          } catch (err) {
            report(err);
            return;
          }
          await refreshThenSay(next === "trusted" ? `${label} is trusted.` : `${label} is no longer trusted.`);
        });
      });
      actions.append(toggle);
    }
    const remove = el("button", { type: "button", class: "danger", "aria-label": `Remove ${label}` }, "Remove");
    remove.addEventListener("click", () => {
      void busy(remove, status, async () => {
        try {
          await stepUp(() => lk.removeDevice(d.device_id));
        } catch (err) {
          report(err);
          return;
        }
        await refreshThenSay(`${label} was removed and its sessions ended.`);
      });
    });
    actions.append(remove);
    const name = el("span", {}, label, d.device_id === here ? el("span", { class: "badge" }, "This browser") : null);
    const trust = d.trust === "blocked" ? "blocked (by an administrator)" : d.trust;
    return [name, trust, time(d.first_seen_at), time(d.last_seen_at), d.last_ip ?? "—", actions];
  });
  const holder = byId("devices");
  clear(holder);
  holder.append(table("Your devices", ["Device", "Trust", "First seen", "Last seen", "Last IP address", ""], rows));
}

// TOTP.

byId<HTMLButtonElement>("totp-enroll").addEventListener("click", (event) => {
  void busy(event.currentTarget as HTMLButtonElement, status, async () => {
    let enrolment: { secret: string; otpauth_uri: string };
    try {
      enrolment = await stepUp(() => lk.enrollTotp());
    } catch (err) {
      if (refused(err, "conflict")) await refreshView();
      report(err);
      return;
    }
    const qr = byId("totp-qr");
    clear(qr);
    qr.append(qrCanvas(enrolment.otpauth_uri, "QR code of the authenticator secret"));
    byId("totp-secret").textContent = enrolment.secret.replace(/(.{4})(?=.)/g, "$1 ");
    byId("totp-secret").dataset.secret = enrolment.secret;
    show(byId("totp-enrolment"), true);
    say(status, "Scan the code, then enter the code your app shows.");
    byId("totp-confirm-code").focus();
  });
});

byId<HTMLFormElement>("totp-confirm-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(form, status, async () => {
    let codes: string[];
    try {
      const code = field(form, "code").replace(/\s+/g, "");
      codes = await stepUp(() => lk.confirmTotp(code));
    } catch (err) {
      report(err);
      return;
    }
    form.reset();
    show(byId("totp-enrolment"), false);
    clear(byId("totp-qr"));
    byId("totp-secret").textContent = "";
    const list = byId("recovery-codes");
    clear(list);
    for (const code of codes) list.append(el("li", {}, el("code", {}, code)));
    await refreshView();
    show(byId("recovery"), true);
    say(status, "Two-factor authentication is on.", "ok");
    byId("recovery").focus();
  });
});

byId("recovery-done").addEventListener("click", () => {
  clear(byId("recovery-codes"));
  show(byId("recovery"), false);
  byId("totp-section-title").setAttribute("tabindex", "-1");
  byId("totp-section-title").focus();
});

byId<HTMLFormElement>("totp-disable-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(form, status, async () => {
    try {
      const code = field(form, "code").replace(/\s+/g, "");
      await stepUp(() => lk.disableTotp(code));
    } catch (err) {
      report(err);
      return;
    }
    form.reset();
    await refreshThenSay("Two-factor authentication is off.");
  });
});

// Passkeys.

async function loadPasskeys(): Promise<void> {
  const passkeys = await lk.passkeys();
  const rows = passkeys.map((p) => {
    const remove = el("button", { type: "button", class: "danger", "aria-label": `Remove the passkey ${p.name}` }, "Remove");
    remove.addEventListener("click", () => {
      void busy(remove, status, async () => {
        try {
          await stepUp(() => lk.removePasskey(p.id));
        } catch (err) {
          report(err);
          return;
        }
        await refreshThenSay(`The passkey ${p.name} was removed.`);
      });
    });
    return [p.name, time(p.created_at), p.last_used_at ? time(p.last_used_at) : "never", remove];
  });
  const holder = byId("passkeys");
  clear(holder);
  if (rows.length > 0) holder.append(table("Your passkeys", ["Name", "Added", "Last used", ""], rows));
  else holder.append(el("p", {}, "You have no passkey yet."));
  const form = byId<HTMLFormElement>("passkey-form");
  show(form, passkeysSupported());
}

byId<HTMLFormElement>("passkey-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(form, status, async () => {
    const name = field(form, "name").trim();
    let added: { name: string };
    try {
      added = await stepUp(async () => {
        const { ceremonyId, options } = await lk.registerPasskeyStart(name);
        say(status, "Follow your browser's prompt to create the passkey…");
        return lk.registerPasskeyFinish(ceremonyId, await createPasskey(options));
      });
    } catch (err) {
      report(err);
      return;
    }
    form.reset();
    await refreshThenSay(`The passkey ${added.name} was added.`);
  });
});

// Password change.

byId<HTMLFormElement>("password-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(form, status, async () => {
    passwordsMatch(form);
    const password = field(form, "password");
    try {
      await stepUp(() => lk.changePassword(password));
    } catch (err) {
      report(err);
      return;
    }
    form.reset();
    await refreshThenSay("Your password is changed. Your other sessions have ended.");
  });
});

// Start.

async function start(): Promise<void> {
  try {
    const who = await whoami();
    if (who !== null && leaveIfAsked()) return;
    await refreshView(who);
    if (returnTo() !== null && me === null) {
      say(status, "Sign in to continue to the application that sent you here.");
    }
  } catch (err) {
    show(byId("loading"), false);
    say(status, message(err), "error");
  }
}

void start();
