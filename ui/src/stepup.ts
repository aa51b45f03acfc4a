// Step-up: sensitive operations need a recent login, else the server answers
// 401 `reauthentication_required`. The page then asks for the password again
// (and the second factor when on) in a modal dialog, signs in anew (a new
// cookie session), ends the session it replaces, and retries the operation.
// A user with a passkey may instead confirm with it: the session stays and
// its authentication time is renewed (/v1/account/reauth/webauthn).

import { lk, refused } from "./api";
import { factorOf, login } from "./auth";
import { el, message, say } from "./dom";
import { passkeysSupported, usePasskey } from "./passkey";

export { factorOf };

export class Cancelled extends Error {
  constructor() {
    super("Cancelled.");
    this.name = "Cancelled";
  }
}

let dialog: HTMLDialogElement | null = null;

function build(): HTMLDialogElement {
  const status = el("p", { id: "stepup-status", role: "alert", hidden: true, class: "status" });
  const form = el(
    "form",
    { id: "stepup-form", method: "dialog", noValidate: false },
    el("h2", { id: "stepup-title" }, "Confirm it is you"),
    el(
      "p",
      { id: "stepup-why" },
      passkeysSupported()
        ? "This change needs a recent sign-in. Enter your password again, or use a passkey."
        : "This change needs a recent sign-in. Enter your password again.",
    ),
    el("input", { id: "stepup-username", name: "username", type: "text", autocomplete: "username", hidden: true, readOnly: true }),
    el(
      "p",
      {},
      el("label", { for: "stepup-password" }, "Password"),
      el("input", { id: "stepup-password", name: "password", type: "password", autocomplete: "current-password", required: true }),
    ),
    el(
      "p",
      { id: "stepup-code-row", hidden: true },
      el("label", { for: "stepup-code" }, "Authenticator code or recovery code"),
      el("input", { id: "stepup-code", name: "code", type: "text", autocomplete: "one-time-code", inputMode: "text", spellcheck: false }),
    ),
    status,
    el(
      "p",
      { class: "actions" },
      el("button", { type: "submit", id: "stepup-submit" }, "Confirm"),
      el("button", { type: "button", id: "stepup-passkey", class: "secondary", hidden: !passkeysSupported() }, "Use a passkey"),
      el("button", { type: "button", id: "stepup-cancel", class: "secondary" }, "Cancel"),
    ),
  );
  const d = el("dialog", { id: "stepup", "aria-labelledby": "stepup-title" }, form);
  document.body.append(d);
  return d;
}

/**
 * Asks `username`'s password (and second factor) in a dialog and signs in
 * again, or takes a passkey instead. Resolves once a new session cookie is
 * set (`"new-session"`) or this session was renewed by passkey
 * (`"renewed"`); rejects with Cancelled when the user closes the dialog.
 */
export function reauthenticate(username: string): Promise<"new-session" | "renewed"> {
  dialog ??= build();
  const d = dialog;
  const form = d.querySelector("form") as HTMLFormElement;
  const password = d.querySelector("#stepup-password") as HTMLInputElement;
  const codeRow = d.querySelector("#stepup-code-row") as HTMLElement;
  const code = d.querySelector("#stepup-code") as HTMLInputElement;
  const status = d.querySelector("#stepup-status") as HTMLElement;
  const cancel = d.querySelector("#stepup-cancel") as HTMLButtonElement;
  const submit = d.querySelector("#stepup-submit") as HTMLButtonElement;
  const passkey = d.querySelector("#stepup-passkey") as HTMLButtonElement;
  (d.querySelector("#stepup-username") as HTMLInputElement).value = username;
  password.value = "";
  code.value = "";
  codeRow.hidden = true;
  code.required = false;
  password.disabled = false;
  submit.hidden = false;
  say(status, "");
  let mfaToken: string | null = null;

  return new Promise<"new-session" | "renewed">((resolve, reject) => {
    const finish = (outcome: "new-session" | "renewed" | null) => {
      form.onsubmit = null;
      cancel.onclick = null;
      passkey.onclick = null;
      d.oncancel = null;
      d.close();
      if (outcome !== null) resolve(outcome);
      else reject(new Cancelled());
    };
    cancel.onclick = () => finish(null);
    passkey.onclick = async () => {
      passkey.disabled = true;
      try {
        if (mfaToken === null) {
          // No password needed: the passkey renews this session.
          await lk.reauthPasskeyFinish(await usePasskey(await lk.reauthPasskeyStart()));
          finish("renewed");
        } else {
          // The password was right: the passkey is the second factor.
          await lk.loginWebauthnFinish(mfaToken, await usePasskey(await lk.loginWebauthnStart(mfaToken)));
          finish("new-session");
        }
      } catch (err) {
        say(status, message(err), "error");
      } finally {
        passkey.disabled = false;
      }
    };
    d.oncancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    form.onsubmit = async (event) => {
      event.preventDefault();
      submit.disabled = true;
      try {
        if (mfaToken === null) {
          const result = await login(username, password.value);
          if (result.kind === "mfa") {
            mfaToken = result.mfaToken;
            password.disabled = true;
            const totp = result.methods.includes("totp");
            codeRow.hidden = !totp;
            code.required = totp;
            submit.hidden = !totp;
            say(status, totp ? "" : "Now confirm with your passkey.");
            (totp ? code : passkey).focus();
            return;
          }
        } else {
          await lk.loginTotp(mfaToken, factorOf(code.value));
        }
        finish("new-session");
      } catch (err) {
        if (refused(err, "unauthorized") && mfaToken !== null) {
          // The MFA token was burnt: start over with the password.
          mfaToken = null;
          password.disabled = false;
          codeRow.hidden = true;
          code.required = false;
          submit.hidden = false;
        }
        say(status, message(err), "error");
      } finally {
        submit.disabled = false;
      }
    };
    d.showModal();
    password.focus();
  });
}

/**
 * Runs `work`; on 401 `reauthentication_required` asks for the password,
 * signs in again, ends the session that was replaced (`oldSessionId`), and
 * runs `work` once more.
 */
export async function withStepUp<T>(username: string, oldSessionId: string | undefined, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (!refused(err, "reauthentication_required")) throw err;
  }
  const outcome = await reauthenticate(username);
  if (outcome === "new-session" && oldSessionId !== undefined) {
    // The new sign-in replaced the session cookie; the old session would
    // otherwise linger until it expires.
    await lk.revoke(oldSessionId).catch(() => undefined);
  }
  return work();
}
