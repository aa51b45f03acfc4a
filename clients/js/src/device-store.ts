/**
 * Where a bearer-mode client keeps its device credentials (`lk_d_`): latchkey
 * hands one out with the first session of a device for an account and
 * expects it back in later logins (trust, lockout exemption, `new_device`).
 * Keys are made by `deviceKey` (base URL and username). Either method may
 * return a promise (for an asynchronous keychain, say).
 */
export interface DeviceStore {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, token: string): void | Promise<void>;
}

/**
 * The store key of a device credential: the service's base URL and the
 * username as latchkey compares it (RFC 8265 UsernameCaseMapped: width and
 * case folded, so "Alice" and "alice" share one credential).
 */
export function deviceKey(baseUrl: string, username: string): string {
  const name = username.normalize("NFKC").toLowerCase().normalize("NFC");
  return `latchkey-device:${baseUrl.replace(/\/+$/, "")}:${name}`;
}

/** Device credentials in memory: they last as long as the store object. */
export function memoryDeviceStore(): DeviceStore {
  const tokens = new Map<string, string>();
  return {
    get: (key) => tokens.get(key),
    set: (key, token) => {
      tokens.set(key, token);
    },
  };
}

/**
 * Device credentials in Web Storage (`localStorage` by default). A page
 * script can read them; a browser app that can use cookie mode should, and
 * let latchkey keep the credential in its HttpOnly `__Host-lk_device` cookie.
 */
export function localStorageDeviceStore(storage: Storage = globalThis.localStorage): DeviceStore {
  if (storage === undefined) throw new TypeError("localStorageDeviceStore: no localStorage here; pass a Storage");
  return {
    get: (key) => storage.getItem(key),
    set: (key, token) => storage.setItem(key, token),
  };
}
