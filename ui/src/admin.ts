// The admin console (/ui/admin): users, one user's sessions and devices with
// trust, lock and unlock, reset tokens, the audit log, the keyring. Every
// action is a call to the admin API (/v1/admin/...); state-changing ones
// need a recent login, asked for in the step-up dialog.

import { type components, LatchkeyError, lk, type Trust, type WhoAmI } from "./api";
import { busy, byId, clear, el, field, message, say, show, table, time } from "./dom";
import { Cancelled, withStepUp } from "./stepup";

type AdminUser = components["schemas"]["AdminUser"];
type AdminUserDetail = components["schemas"]["AdminUserDetail"];
type AuditItem = components["schemas"]["AuditItem"];

// GET /v1/admin/keys: the OpenAPI document gives its answer no schema, so
// the fields the console shows are written here.
interface Keyring {
  active_key_id: string | null;
  kdf: string;
  kdf_iterations: number;
  keys: { key_id: string; state: string; created_at: string; age_days: number; use_count: number; rows: number }[];
  signing_keys: { kid: string; state: string; created_at: string; retired_at: string | null }[];
}

const EVENTS = [
  "registration",
  "login.success",
  "login.failure",
  "mfa.success",
  "mfa.failure",
  "recovery_code.used",
  "session.create",
  "session.refresh",
  "session.revoke",
  "session.evicted",
  "refresh_token.reuse",
  "device.new",
  "device.trust",
  "device.remove",
  "device.mismatch",
  "totp.enroll",
  "totp.disable",
  "totp.removed_by_admin",
  "webauthn.register",
  "webauthn.remove",
  "webauthn.removed_by_admin",
  "webauthn.counter_regression",
  "session.reauth",
  "password.change",
  "password.reset",
  "password.reset_issued",
  "account.lock",
  "account.unlock",
  "account.delete",
  "admin.grant",
  "admin.revoke",
  "admin.revoke_sessions",
  "key.rotate",
  "key.reencrypt",
];

const PAGE = 50;
const status = byId("status");
let me: WhoAmI | null = null;
let users: AdminUser[] = [];
let usersCursor: string | null = null;
let usersAsked = 0;
let selected: AdminUserDetail | null = null;
let auditCursor: number | null = null;

function stepUp<T>(work: () => Promise<T>): Promise<T> {
  if (me === null) return work();
  const username = me.username;
  return withStepUp(username, me.session_id, work).finally(async () => {
    me = await lk.whoami().catch(() => me);
  });
}

/** Runs an admin action from `control`; false if it failed or was cancelled (reported). */
function act(control: HTMLButtonElement | HTMLFormElement, work: () => Promise<void>): Promise<boolean> {
  return busy(control, status, async () => {
    try {
      await stepUp(work);
    } catch (err) {
      if (err instanceof Cancelled) {
        say(status, "Cancelled.");
        return;
      }
      throw err;
    }
  });
}

/** An id, shortened: the tail of a UUID (a v7 one starts with its creation time). */
function short(id: string): string {
  return id.length > 12 ? `…${id.slice(-8)}` : id;
}

/** A datetime-local value as an RFC 3339 UTC time (undefined when empty). */
function utc(local: string): string | undefined {
  if (!local) return undefined;
  const date = new Date(local);
  if (Number.isNaN(date.getTime())) throw new Error(`${local} is not a date and time`);
  return date.toISOString();
}

// Users.

async function loadUsers(more: boolean): Promise<void> {
  const cursor = more && usersCursor ? usersCursor : undefined;
  const q = byId<HTMLInputElement>("users-query").value.trim() || undefined;
  const asked = ++usersAsked;
  const page = await lk.request((api) => api.GET("/v1/admin/users", { params: { query: { limit: PAGE, cursor, q } } }));
  if (asked !== usersAsked) return; // a later search has been sent
  users = more ? users.concat(page.users) : page.users;
  usersCursor = page.next_cursor ?? null;
  renderUsers();
}

function lockText(u: AdminUser): string {
  if (!u.locked_until || new Date(u.locked_until).getTime() <= Date.now()) return "no";
  const until = new Date(u.locked_until);
  const reason = u.lock_reason ? ` (${u.lock_reason})` : "";
  return until.getFullYear() >= 9999 ? `until unlocked${reason}` : `until ${until.toLocaleString()}${reason}`;
}

function renderUsers(): void {
  const rows = users.map((u) => {
    const open = el("button", { type: "button", class: "link", "aria-label": `Open ${u.username}` }, u.username);
    open.addEventListener("click", () => void openUser(u.user_id));
    return [open, time(u.created_at), u.totp_enabled ? "on" : "off", u.roles.join(", ") || "—", lockText(u), String(u.failed_attempts)];
  });
  const holder = byId("users");
  clear(holder);
  holder.append(table("Users", ["Username", "Created", "TOTP", "Roles", "Locked", "Failed attempts"], rows));
  show(byId("users-more"), usersCursor !== null);
  const q = byId<HTMLInputElement>("users-query").value.trim();
  byId("users-count").textContent =
    `${users.length} ${q ? "found" : "loaded"}${usersCursor ? " (more to load)" : ""}.`;
}

byId<HTMLFormElement>("users-filter").addEventListener("submit", (e) => e.preventDefault());
// The server searches by username prefix (normalized as usernames are).
let searchTimer: ReturnType<typeof setTimeout> | undefined;
byId("users-query").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    loadUsers(false).catch((err: unknown) => say(status, message(err), "error"));
  }, 200);
});
byId<HTMLButtonElement>("users-more").addEventListener("click", (e) => {
  void busy(e.currentTarget as HTMLButtonElement, status, () => loadUsers(true));
});

// One user.

async function openUser(id: string, focus = true): Promise<boolean> {
  try {
    selected = await lk.request((api) => api.GET("/v1/admin/users/{id}", { params: { path: { id } } }));
  } catch (err) {
    say(status, message(err), "error");
    return false;
  }
  const u = selected;
  byId("user-title").textContent = `User ${u.username}`;
  const facts = byId("user-facts");
  clear(facts);
  const fact = (name: string, value: Node | string) => facts.append(el("dt", {}, name), el("dd", {}, value));
  fact("User id", el("code", {}, u.user_id));
  fact("Created", time(u.created_at));
  fact("Roles", u.roles.join(", ") || "—");
  fact("TOTP", u.totp_enabled ? "on" : "off");
  fact("Locked", lockText(u));
  fact("Failed attempts", String(u.failed_attempts));
  fact("Active sessions", String(u.active_sessions));
  fact("Devices", String(u.devices));
  show(byId("reset-token-box"), false);
  byId("reset-token").textContent = "";
  show(byId("user"), true);
  await Promise.all([loadUserFactors(u.user_id), loadUserSessions(u.user_id), loadUserDevices(u.user_id)]);
  if (focus) byId("user").focus();
  return true;
}

/** The user's second factors: TOTP and each passkey, with a way to remove a lost passkey. */
async function loadUserFactors(id: string): Promise<void> {
  const { factors } = await lk.request((api) => api.GET("/v1/admin/users/{id}/factors", { params: { path: { id } } }));
  const rows = factors.map((f) => {
    const kind = f.kind === "totp" ? "Authenticator app (TOTP)" : "Passkey";
    const name = f.name ?? "—";
    let action: Node | string = "";
    const passkey = f.id;
    if (f.kind === "webauthn" && passkey) {
      const remove = el("button", { type: "button", class: "danger", "aria-label": `Remove the passkey ${name}` }, "Remove");
      remove.addEventListener("click", () => {
        if (!confirm(`Remove the passkey ${name}?`)) return;
        void act(remove, async () => {
          await lk.request((api) =>
            api.DELETE("/v1/admin/users/{id}/webauthn/{credential}", { params: { path: { id, credential: passkey } } }),
          );
          await afterChange(`The passkey ${name} was removed.`);
        });
      });
      action = remove;
    }
    return [kind, name, time(f.created_at), f.last_used_at ? time(f.last_used_at) : "never", action];
  });
  const holder = byId("user-factors");
  clear(holder);
  holder.append(
    factors.length
      ? table("Second factors of the user", ["Kind", "Name", "Added", "Last used", ""], rows)
      : el("p", {}, "No second factor."),
  );
}

async function loadUserSessions(id: string): Promise<void> {
  const { sessions } = await lk.request((api) => api.GET("/v1/admin/users/{id}/sessions", { params: { path: { id } } }));
  const rows = sessions.map((s) => [
    s.device?.name || s.user_agent || "—",
    s.ip ?? "—",
    time(s.created_at),
    time(s.last_seen_at),
    s.aal,
  ]);
  const holder = byId("user-sessions");
  clear(holder);
  holder.append(
    sessions.length
      ? table("Sessions of the user", ["Device", "IP address", "Signed in", "Last active", "Level"], rows)
      : el("p", {}, "No active sessions."),
  );
}

async function loadUserDevices(id: string): Promise<void> {
  const { devices } = await lk.request((api) => api.GET("/v1/admin/users/{id}/devices", { params: { path: { id } } }));
  const rows = devices.map((d) => {
    const label = d.name || d.user_agent || d.device_id;
    const select = el(
      "select",
      { "aria-label": `Trust of ${label}` },
      ...(["unknown", "trusted", "blocked"] as Trust[]).map((t) => el("option", { value: t, selected: t === d.trust }, t)),
    );
    const apply = el("button", { type: "button", class: "secondary", "aria-label": `Set the trust of ${label}` }, "Set");
    apply.addEventListener("click", () => {
      const trust = select.value as Trust;
      void act(apply, async () => {
        await lk.request((api) =>
          api.PUT("/v1/admin/devices/{id}/trust", { params: { path: { id: d.device_id } }, body: { trust } }),
        );
        await afterChange(`${label} is now ${trust}.`);
      });
    });
    return [label, el("span", { class: `trust trust-${d.trust}` }, d.trust), time(d.first_seen_at), time(d.last_seen_at), d.last_ip ?? "—", el("span", { class: "row-actions" }, select, apply)];
  });
  const holder = byId("user-devices");
  clear(holder);
  holder.append(
    devices.length
      ? table("Devices of the user", ["Device", "Trust", "First seen", "Last seen", "Last IP address", "Change trust"], rows)
      : el("p", {}, "No devices."),
  );
}

async function afterChange(text: string): Promise<void> {
  // The view first, then the word: the status line speaks of what is shown.
  // When the view cannot be reloaded, the change is still reported.
  try {
    const reopened = selected ? await openUser(selected.user_id, false) : true;
    await Promise.all([loadUsers(false), loadAudit(false)]);
    if (reopened) say(status, text, "ok");
    else say(status, `${text} ${status.textContent ?? ""}`, "error");
  } catch (err) {
    say(status, `${text} The page could not be refreshed: ${message(err)}`, "error");
  }
}

byId<HTMLButtonElement>("user-audit").addEventListener("click", (e) => {
  if (!selected) return;
  byId<HTMLInputElement>("audit-user").value = selected.user_id;
  byId<HTMLInputElement>("audit-event").value = "";
  void busy(e.currentTarget as HTMLButtonElement, status, async () => {
    await loadAudit(false);
    byId("audit-title").setAttribute("tabindex", "-1");
    byId("audit-title").focus();
  });
});

byId<HTMLFormElement>("lock-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = e.currentTarget as HTMLFormElement;
  if (!selected) return;
  const id = selected.user_id;
  const name = selected.username;
  void act(form, async () => {
    const body: { reason: string; until?: string } = { reason: field(form, "reason") };
    const until = utc(field(form, "until"));
    if (until) body.until = until;
    await lk.request((api) => api.POST("/v1/admin/users/{id}/lock", { params: { path: { id } }, body }));
    form.reset();
    await afterChange(`${name} is locked.`);
  });
});

byId<HTMLButtonElement>("unlock").addEventListener("click", (e) => {
  if (!selected) return;
  const { user_id: id, username: name } = selected;
  void act(e.currentTarget as HTMLButtonElement, async () => {
    await lk.request((api) => api.POST("/v1/admin/users/{id}/unlock", { params: { path: { id } } }));
    await afterChange(`${name} is unlocked.`);
  });
});

byId<HTMLButtonElement>("issue-reset").addEventListener("click", (e) => {
  if (!selected) return;
  const { user_id: id, username: name } = selected;
  void act(e.currentTarget as HTMLButtonElement, async () => {
    const issued = await lk.request((api) => api.POST("/v1/admin/users/{id}/reset", { params: { path: { id } } }));
    byId("reset-token").textContent = issued.reset_token;
    const expires = byId("reset-token-expires");
    clear(expires);
    expires.append(time(issued.expires_at));
    show(byId("reset-token-box"), true);
    say(status, `A reset token for ${name} is shown below.`, "ok");
  });
});

byId<HTMLButtonElement>("remove-totp").addEventListener("click", (e) => {
  if (!selected) return;
  const { user_id: id, username: name } = selected;
  if (!confirm(`Remove the authenticator app (TOTP) of ${name}? Without another second factor they can then sign in with the password alone.`)) return;
  void act(e.currentTarget as HTMLButtonElement, async () => {
    await lk.request((api) => api.DELETE("/v1/admin/users/{id}/totp", { params: { path: { id } } }));
    await afterChange(`The authenticator app of ${name} was removed.`);
  });
});

byId<HTMLButtonElement>("revoke-user-sessions").addEventListener("click", (e) => {
  if (!selected) return;
  const { user_id: id, username: name } = selected;
  void act(e.currentTarget as HTMLButtonElement, async () => {
    const { revoked } = await lk.request((api) =>
      api.DELETE("/v1/admin/users/{id}/sessions", { params: { path: { id } } }),
    );
    await afterChange(`${revoked} session${revoked === 1 ? "" : "s"} of ${name} ended.`);
  });
});

byId<HTMLButtonElement>("delete-user").addEventListener("click", (e) => {
  if (!selected) return;
  const { user_id: id, username: name } = selected;
  if (!confirm(`Delete ${name} and all their data? This cannot be undone.`)) return;
  void act(e.currentTarget as HTMLButtonElement, async () => {
    await lk.request((api) => api.DELETE("/v1/admin/users/{id}", { params: { path: { id } } }));
    selected = null;
    show(byId("user"), false);
    say(status, `${name} was deleted.`, "ok");
    await loadUsers(false);
  });
});

// Audit log.

function auditQuery() {
  const form = byId<HTMLFormElement>("audit-filter");
  return {
    limit: PAGE,
    user_id: field(form, "user_id").trim() || undefined,
    event: field(form, "event").trim() || undefined,
    since: utc(field(form, "since")),
    until: utc(field(form, "until")),
  };
}

let auditRows: AuditItem[] = [];

async function loadAudit(more: boolean): Promise<void> {
  const query = { ...auditQuery(), cursor: more && auditCursor !== null ? auditCursor : undefined };
  const page = await lk.request((api) => api.GET("/v1/admin/audit", { params: { query } }));
  auditRows = more ? auditRows.concat(page.events) : page.events;
  auditCursor = page.next_cursor ?? null;
  const rows = auditRows.map((a) => [
    String(a.id),
    time(a.occurred_at),
    el("code", {}, a.event),
    el("span", { class: `outcome outcome-${a.outcome}` }, a.outcome),
    a.ip ?? "—",
    a.session_id ? el("code", { title: a.session_id }, short(a.session_id)) : "—",
    a.details === null || a.details === undefined ? "" : el("code", { class: "details" }, JSON.stringify(a.details)),
  ]);
  const holder = byId("audit");
  clear(holder);
  holder.append(
    auditRows.length
      ? table("Audit events, newest first", ["#", "Time", "Event", "Outcome", "IP address", "Session", "Details"], rows)
      : el("p", {}, "No events match."),
  );
  show(byId("audit-more"), auditCursor !== null);
}

byId<HTMLFormElement>("audit-filter").addEventListener("submit", (e) => {
  e.preventDefault();
  void busy(e.currentTarget as HTMLFormElement, status, () => loadAudit(false));
});
byId<HTMLFormElement>("audit-filter").addEventListener("reset", () => {
  setTimeout(() => void busy(byId<HTMLFormElement>("audit-filter"), status, () => loadAudit(false)), 0);
});
byId<HTMLButtonElement>("audit-more").addEventListener("click", (e) => {
  void busy(e.currentTarget as HTMLButtonElement, status, () => loadAudit(true));
});

// Keyring.

async function loadKeys(): Promise<void> {
  const k = (await lk.request((api) => api.GET("/v1/admin/keys"))) as unknown as Keyring;
  const holder = byId("keys");
  clear(holder);
  holder.append(
    el("p", {}, `Key-encryption key: ${k.kdf}, ${k.kdf_iterations.toLocaleString()} iterations.`),
    el("h3", {}, "Data keys"),
    table(
      "Data keys",
      ["Key", "State", "Created", "Age (days)", "Uses", "Rows"],
      k.keys.map((d) => [
        el("code", { title: d.key_id }, short(d.key_id)),
        d.key_id === k.active_key_id ? `${d.state} (in use)` : d.state,
        time(d.created_at),
        String(d.age_days),
        d.use_count.toLocaleString(),
        d.rows.toLocaleString(),
      ]),
    ),
    el("h3", {}, "Signing keys (JWT)"),
    table(
      "Signing keys",
      ["Key id", "State", "Created", "Retired"],
      k.signing_keys.map((s) => [el("code", { title: s.kid }, short(s.kid)), s.state, time(s.created_at), time(s.retired_at)]),
    ),
  );
}

for (const [id, kind, what] of [
  ["rotate-data", "data", "data key"],
  ["rotate-signing", "signing", "signing key"],
] as const) {
  byId<HTMLButtonElement>(id).addEventListener("click", (e) => {
    if (!confirm(`Make a new ${what}?`)) return;
    void act(e.currentTarget as HTMLButtonElement, async () => {
      await lk.request((api) => api.POST("/v1/admin/keys/rotate", { params: { query: { kind } } }));
      say(status, `A new ${what} is active.`, "ok");
      await loadKeys();
    });
  });
}

// Start: signed in, and an admin?

function deny(text: string, signIn: boolean): void {
  show(byId("loading"), false);
  byId("denied-text").textContent = text;
  show(byId("denied-link"), signIn);
  show(byId("denied"), true);
}

async function start(): Promise<void> {
  const events = byId("audit-events");
  for (const name of EVENTS) events.append(el("option", { value: name }));
  try {
    me = await lk.whoami();
  } catch (err) {
    if (err instanceof LatchkeyError && err.status === 401) {
      deny("Sign in with an administrator account to use the admin console.", true);
    } else {
      deny(message(err), false);
    }
    return;
  }
  try {
    await loadUsers(false);
  } catch (err) {
    if (err instanceof LatchkeyError && err.status === 403) {
      deny(
        `You are signed in as ${me.username}, which does not have the admin role here${me.aal === "aal1" ? " (or an admin with two-factor authentication must sign in with it)" : ""}. An administrator grants it with the command line's "latchkey admin grant" and this username.`,
        false,
      );
    } else {
      deny(message(err), false);
    }
    return;
  }
  show(byId("loading"), false);
  show(byId("console"), true);
  await Promise.all([loadAudit(false), loadKeys()]).catch((err: unknown) => say(status, message(err), "error"));
}

void start();
