// Passkeys in the browser: latchkey's WebAuthn options (JSON, binary members
// base64url) go through the browser's own JSON parsers
// (PublicKeyCredential.parseCreationOptionsFromJSON / ...RequestOptions...)
// and the answer back through credential.toJSON(), so the page converts no
// bytes by hand.

import type { WebauthnCredential, WebauthnOptions } from "@latchkey/client";

type JsonPublicKeyCredential = PublicKeyCredential & { toJSON(): WebauthnCredential };
type PublicKeyCredentialJson = typeof PublicKeyCredential & {
  parseCreationOptionsFromJSON(options: unknown): PublicKeyCredentialCreationOptions;
  parseRequestOptionsFromJSON(options: unknown): PublicKeyCredentialRequestOptions;
};

/** Whether this browser can use passkeys with latchkey's pages. */
export function passkeysSupported(): boolean {
  const pkc = globalThis.PublicKeyCredential as PublicKeyCredentialJson | undefined;
  return pkc !== undefined && typeof pkc.parseCreationOptionsFromJSON === "function";
}

function parser(): PublicKeyCredentialJson {
  if (!passkeysSupported()) throw new Error("This browser cannot use passkeys here.");
  return globalThis.PublicKeyCredential as PublicKeyCredentialJson;
}

function publicKey(options: WebauthnOptions): unknown {
  return (options as { publicKey?: unknown }).publicKey;
}

function cancelled(err: unknown): Error {
  if (err instanceof DOMException && err.name === "NotAllowedError") {
    return new Error("The passkey was not used (cancelled or timed out).");
  }
  if (err instanceof DOMException && err.name === "InvalidStateError") {
    return new Error("This authenticator is registered already.");
  }
  return err instanceof Error ? err : new Error(String(err));
}

/** Creates a passkey for registration options; the browser's answer as JSON. */
export async function createPasskey(options: WebauthnOptions): Promise<WebauthnCredential> {
  const parsed = parser().parseCreationOptionsFromJSON(publicKey(options));
  try {
    const credential = (await navigator.credentials.create({ publicKey: parsed })) as JsonPublicKeyCredential | null;
    if (credential === null) throw new Error("No passkey was created.");
    return credential.toJSON();
  } catch (err) {
    throw cancelled(err);
  }
}

/** Uses a passkey for assertion options; the browser's answer as JSON. */
export async function usePasskey(options: WebauthnOptions): Promise<WebauthnCredential> {
  const parsed = parser().parseRequestOptionsFromJSON(publicKey(options));
  try {
    const credential = (await navigator.credentials.get({ publicKey: parsed })) as JsonPublicKeyCredential | null;
    if (credential === null) throw new Error("No passkey was used.");
    return credential.toJSON();
  } catch (err) {
    throw cancelled(err);
  }
}
