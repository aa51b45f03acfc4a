// Signing in from the pages: OPAQUE through the client (the password never
// leaves this page; the server sees OPAQUE messages only), asking for a
// cookie session, then the second factor when it is on.

import type { LoginResult, SecondFactor } from "@latchkey/client";

import { lk } from "./api";

/** A short label for this browser, shown in the session and device lists. */
export function deviceDescription(): { name: string } {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua)
    ? "Edge"
    : /Firefox\//.test(ua)
      ? "Firefox"
      : /Chrom(e|ium)\//.test(ua)
        ? "Chromium"
        : /Safari\//.test(ua)
          ? "Safari"
          : "Browser";
  const platform = /Android/.test(ua)
    ? "Android"
    : /iPhone|iPad/.test(ua)
      ? "iOS"
      : /Mac OS X/.test(ua)
        ? "macOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Linux/.test(ua)
            ? "Linux"
            : "";
  return { name: platform ? `${browser} on ${platform}` : browser };
}

/**
 * An OPAQUE login asking for a cookie session, named after this browser. The
 * device credential travels as a cookie too, so nothing is stored by the
 * page. A password the server's answer does not open with is refused by the
 * client without sending login/finish (the attempt was counted at
 * login/start).
 */
export function login(username: string, password: string): Promise<LoginResult> {
  return lk.login(username, password, { deviceName: deviceDescription().name });
}

/** The second-factor field's value: a 6-digit TOTP code, else a recovery code. */
export function factorOf(value: string): SecondFactor {
  const trimmed = value.replace(/\s+/g, "");
  return /^[0-9]{6}$/.test(trimmed) ? { code: trimmed } : { recoveryCode: value.trim() };
}
