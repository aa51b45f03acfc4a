import { client as opaque, ready as opaqueReady } from "@serenity-kit/opaque";
import createFetchClient, { type Client as FetchClient } from "openapi-fetch";

import { type DeviceStore, deviceKey, memoryDeviceStore } from "./device-store.js";
import { LatchkeyError } from "./errors.js";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
export type SessionAnswer = Schemas["SessionAnswer"];
export type WhoAmI = Schemas["WhoAmI"];
export type SessionItem = Schemas["SessionItem"];
export type DeviceItem = Schemas["DeviceItem"];
export type Trust = Schemas["Trust"];
export type Aal = Schemas["Aal"];
export type JwtAnswer = Schemas["JwtAnswer"];
export type Registered = Schemas["Registered"];
export type Enrollment = Schemas["Enrollment"];
export type Account = Schemas["Profile"];
export type FactorKind = Schemas["FactorKind"];
export type PasskeyItem = Schemas["CredentialItem"];
/** WebAuthn options as JSON (`{ publicKey: … }`, binary members base64url). */
export type WebauthnOptions = Record<string, unknown>;
/** A browser's `PublicKeyCredential` as JSON (`credential.toJSON()`). */
export type WebauthnCredential = Record<string, unknown>;

/** The typed openapi-fetch client over the generated `paths`. */
export type Api = FetchClient<paths>;

/** login/finish's 200 when TOTP is on: finish at /v1/login/totp. */
type MfaAnswer = Schemas["MfaRequired"];

/**
 * A login's outcome: a session, or the second step still due: `loginTotp`,
 * or `loginWebauthnStart` + `loginWebauthnFinish`, as `methods` offers.
 */
export type LoginResult =
  | { kind: "session"; session: SessionAnswer }
  | { kind: "mfa"; mfaToken: string; expiresAt: string; methods: FactorKind[] };

/** The second factor: the current TOTP code or one recovery code. */
export type SecondFactor = { code: string } | { recoveryCode: string };

/** The bearer tokens a bearer-mode client holds. */
export interface Tokens {
  sessionToken: string;
  refreshToken: string;
}

export interface ClientOptions {
  /** latchkey's base URL (`https://auth.example`); "" for the page's own origin in cookie mode. */
  baseUrl: string;
  /** The fetch to use (default `globalThis.fetch`). */
  fetch?: typeof globalThis.fetch;
  /** Where a bearer client keeps device credentials (default: in memory). Unused in cookie mode. */
  deviceStore?: DeviceStore;
  /**
   * `bearer` (default): the client holds the session and refresh tokens in
   * memory and sends `Authorization: Bearer`. `cookie` (browsers on
   * latchkey's host): latchkey keeps tokens and the device credential in
   * HttpOnly cookies; every request sends `X-Latchkey-CSRF: 1`.
   */
  mode?: "bearer" | "cookie";
}

export interface LoginOptions {
  /** A name for this device, shown in the user's device list. */
  deviceName?: string;
  /** A description of the device (<= 256 chars; descriptive only, defaults to the User-Agent). */
  fingerprint?: string;
}

type Headers_ = Record<string, string>;
/** What an openapi-fetch call resolves to. */
export type Outcome<T> = { data?: T; error?: unknown; response: Response };

/** Resolves to the answer's data, or throws its LatchkeyError. */
async function expect<T>(call: Promise<Outcome<T>>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw LatchkeyError.fromResponse(response, error);
  return data as T;
}

function isUnauthorized(outcome: Outcome<unknown>): boolean {
  const { response, error } = outcome;
  return response.status === 401 && (error as { code?: unknown } | undefined)?.code === "unauthorized";
}

function isMfaAnswer(answer: SessionAnswer | MfaAnswer): answer is MfaAnswer {
  return (answer as Partial<MfaAnswer>).mfa_required === true;
}

function notLoggedIn(): LatchkeyError {
  return new LatchkeyError({ status: 401, code: "unauthorized", detail: "no session: log in first" });
}

/**
 * A client of latchkey's HTTP API: OPAQUE registration and login
 * (@serenity-kit/opaque, the password never leaves the client), the TOTP
 * step, single-flight refresh, sessions, devices, password change and reset,
 * and JWTs for other services. Methods throw `LatchkeyError` for refusals.
 */
export class LatchkeyClient {
  /** The typed openapi-fetch client, for routes this class does not wrap (it adds no bearer token). */
  readonly api: Api;
  readonly mode: "bearer" | "cookie";
  readonly baseUrl: string;
  private readonly deviceStore: DeviceStore;
  private tokens: Tokens | undefined;
  private refreshing: Promise<SessionAnswer> | undefined;
  private renewing: Promise<void> | undefined;
  /** The username behind each pending MFA token, to file a device credential issued at login/totp. */
  private readonly pendingMfa = new Map<string, string>();

  constructor(options: ClientOptions) {
    this.mode = options.mode ?? "bearer";
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.deviceStore = options.deviceStore ?? memoryDeviceStore();
    const cookie = this.mode === "cookie";
    this.api = createFetchClient<paths>({
      baseUrl: this.baseUrl,
      fetch: options.fetch,
      ...(cookie ? { credentials: "same-origin" as const, headers: { "X-Latchkey-CSRF": "1" } } : {}),
    });
  }

  /** The bearer tokens held (bearer mode), e.g. to call your own backend or keep them across restarts. */
  getTokens(): Tokens | undefined {
    return this.tokens === undefined ? undefined : { ...this.tokens };
  }

  /** Restores tokens kept elsewhere (bearer mode); `undefined` forgets them. */
  setTokens(tokens: Tokens | undefined): void {
    if (this.mode === "cookie" && tokens !== undefined) throw new TypeError("a cookie-mode client holds no tokens");
    this.tokens = tokens === undefined ? undefined : { ...tokens };
  }

  /** Registers `username` with `password` (OPAQUE); 409 `conflict` when the name is taken. */
  async register(username: string, password: string): Promise<Registered> {
    const record = await this.registration(password, (registration_request) =>
      expect(this.api.POST("/v1/registration/start", { body: { username, registration_request } })),
    );
    return expect(this.api.POST("/v1/registration/finish", { body: { username, registration_record: record } }));
  }

  /**
   * Logs in with OPAQUE. Resolves to a session, or to the TOTP step when the
   * account has TOTP on (finish it with `loginTotp`). A wrong password is
   * noticed by the client (the server's answer does not open): it throws 401
   * `invalid_credentials` and sends no login/finish.
   */
  async login(username: string, password: string, options: LoginOptions = {}): Promise<LoginResult> {
    await opaqueReady;
    const deviceToken = await this.deviceToken(username);
    const { clientLoginState, startLoginRequest } = opaque.startLogin({ password });
    const started = await expect(
      this.api.POST("/v1/login/start", {
        body: { username, credential_request: startLoginRequest, device_token: deviceToken },
      }),
    );
    const finished = opaque.finishLogin({ clientLoginState, loginResponse: started.credential_response, password });
    if (finished === undefined) {
      throw new LatchkeyError({
        status: 401,
        code: "invalid_credentials",
        detail: "the server's answer does not open with this password (checked by the client; nothing more was sent)",
      });
    }
    const device =
      options.deviceName === undefined && options.fingerprint === undefined
        ? undefined
        : { name: options.deviceName, fingerprint: options.fingerprint };
    const answer: SessionAnswer | MfaAnswer = await expect(
      this.api.POST("/v1/login/finish", {
        body: {
          login_id: started.login_id,
          credential_finalization: finished.finishLoginRequest,
          device,
          device_token: deviceToken,
          session_cookie: this.mode === "cookie" ? true : undefined,
        },
      }),
    );
    if (isMfaAnswer(answer)) {
      this.pendingMfa.set(answer.mfa_token, username);
      return {
        kind: "mfa",
        mfaToken: answer.mfa_token,
        expiresAt: answer.mfa_expires_at,
        methods: answer.methods ?? ["totp"],
      };
    }
    const session = answer;
    await this.accept(session, username);
    return { kind: "session", session };
  }

  /** The second step of a login with TOTP on: an aal2 session. 401 `invalid_credentials` on a bad code. */
  async loginTotp(mfaToken: string, factor: SecondFactor): Promise<SessionAnswer> {
    const session = await expect(
      this.api.POST("/v1/login/totp", {
        body: {
          mfa_token: mfaToken,
          ...("code" in factor ? { code: factor.code } : { recovery_code: factor.recoveryCode }),
          session_cookie: this.mode === "cookie" ? true : undefined,
        },
      }),
    );
    const username = this.pendingMfa.get(mfaToken);
    this.pendingMfa.delete(mfaToken);
    await this.accept(session, username);
    return session;
  }

  /** The second step by passkey, first half: options for `navigator.credentials.get`. */
  async loginWebauthnStart(mfaToken: string): Promise<WebauthnOptions> {
    return (await expect(this.api.POST("/v1/login/webauthn/start", { body: { mfa_token: mfaToken } }))).options;
  }

  /** The second step by passkey: the assertion gives an aal2 session. 401 `invalid_credentials` when it fails. */
  async loginWebauthnFinish(mfaToken: string, credential: WebauthnCredential): Promise<SessionAnswer> {
    const session = await expect(
      this.api.POST("/v1/login/webauthn/finish", {
        body: { mfa_token: mfaToken, credential, session_cookie: this.mode === "cookie" ? true : undefined },
      }),
    );
    const username = this.pendingMfa.get(mfaToken);
    this.pendingMfa.delete(mfaToken);
    await this.accept(session, username);
    return session;
  }

  /**
   * Rotates the session and refresh tokens (cookie mode: the refresh
   * cookie). Single-flight: callers that arrive while a rotation is under
   * way share it, since a refresh token is single-use and a second use
   * would end the session. In a browser, tabs share the rotation through a
   * Web Lock when the browser has them.
   */
  refresh(): Promise<SessionAnswer> {
    this.refreshing ??= this.rotate().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** The current session (`GET /v1/sessions/current`); `maxAge`/`aal` ask for freshness as a gateway does. */
  whoami(require: { maxAge?: number; aal?: Aal } = {}): Promise<WhoAmI> {
    const query = { max_age: require.maxAge, aal: require.aal };
    return this.authed((headers) => this.api.GET("/v1/sessions/current", { headers, params: { query } }));
  }

  /** The caller's own account (`GET /v1/account`): username, roles (`admin`), whether TOTP is on, when it was made. */
  account(): Promise<Account> {
    return this.authed((headers) => this.api.GET("/v1/account", { headers }));
  }

  /** The user's active sessions (`current` marks this one). */
  async sessions(): Promise<SessionItem[]> {
    return (await this.authed((headers) => this.api.GET("/v1/sessions", { headers }))).sessions;
  }

  /** Ends one of the user's sessions; 404 `not_found` if it is not theirs. */
  async revoke(sessionId: string): Promise<void> {
    await this.authed((headers) => this.api.DELETE("/v1/sessions/{id}", { headers, params: { path: { id: sessionId } } }));
  }

  /** Ends every other session of the user; resolves to how many ended. */
  async revokeOthers(): Promise<number> {
    const answer = await this.authed((headers) =>
      this.api.DELETE("/v1/sessions", { headers, params: { query: { scope: "others" } } }),
    );
    return answer.revoked;
  }

  /** Ends this session and forgets its tokens. A session that is already over counts as logged out. */
  async logout(): Promise<void> {
    if (this.mode === "bearer" && this.tokens === undefined) return;
    try {
      await this.authed((headers) => this.api.DELETE("/v1/sessions/current", { headers }));
    } catch (err) {
      if (!(err instanceof LatchkeyError && err.status === 401 && err.code === "unauthorized")) throw err;
    } finally {
      this.tokens = undefined;
    }
  }

  /** The devices the user has logged in from. */
  async devices(): Promise<DeviceItem[]> {
    return (await this.authed((headers) => this.api.GET("/v1/devices", { headers }))).devices;
  }

  /** Marks a device `trusted` (not locked out by others' failed logins) or back to `unknown`. Step-up. */
  async trustDevice(deviceId: string, trust: "trusted" | "unknown"): Promise<void> {
    await this.authed((headers) =>
      this.api.PUT("/v1/devices/{id}/trust", { headers, params: { path: { id: deviceId } }, body: { trust } }),
    );
  }

  /** Forgets a device and ends its sessions. */
  async removeDevice(deviceId: string): Promise<void> {
    await this.authed((headers) => this.api.DELETE("/v1/devices/{id}", { headers, params: { path: { id: deviceId } } }));
  }

  /**
   * Changes the password from this session (OPAQUE registration again). It
   * needs a recent login: otherwise 401 `reauthentication_required` (log in
   * again, then retry). Every other session of the user ends.
   */
  async changePassword(newPassword: string): Promise<void> {
    const record = await this.registration(newPassword, (registration_request) =>
      this.authed((headers) => this.api.POST("/v1/account/password/start", { headers, body: { registration_request } })),
    );
    await this.authed((headers) =>
      this.api.POST("/v1/account/password/finish", { headers, body: { registration_record: record } }),
    );
  }

  /**
   * Sets a new password with a reset token (`lk_t_`) an admin issued; no
   * session needed. Every session of the user ends. A bad, spent or expired
   * token is 401 `invalid_credentials`.
   */
  async reset(resetToken: string, newPassword: string): Promise<void> {
    const record = await this.registration(newPassword, (registration_request) =>
      expect(this.api.POST("/v1/account/reset/start", { body: { reset_token: resetToken, registration_request } })),
    );
    await expect(
      this.api.POST("/v1/account/reset/finish", { body: { reset_token: resetToken, registration_record: record } }),
    );
  }

  /** A short-lived JWT (EdDSA) for this session, for services that verify against `/.well-known/jwks.json`. */
  jwt(): Promise<JwtAnswer> {
    return this.authed((headers) => this.api.POST("/v1/tokens/jwt", { headers }));
  }

  /** Starts TOTP enrolment (step-up): the secret, its otpauth URI and a QR PNG. */
  enrollTotp(): Promise<Enrollment> {
    return this.authed((headers) => this.api.POST("/v1/totp/enroll", { headers }));
  }

  /** Confirms TOTP with a current code (step-up); resolves to the 10 recovery codes, shown once. */
  async confirmTotp(code: string): Promise<string[]> {
    return (await this.authed((headers) => this.api.POST("/v1/totp/confirm", { headers, body: { code } })))
      .recovery_codes;
  }

  /** Turns TOTP off (an aal2 session, step-up). */
  async disableTotp(code: string): Promise<void> {
    await this.authed((headers) => this.api.DELETE("/v1/totp", { headers, body: { code } }));
  }

  /** The user's passkeys. */
  async passkeys(): Promise<PasskeyItem[]> {
    return (await this.authed((headers) => this.api.GET("/v1/webauthn/credentials", { headers }))).credentials;
  }

  /** Starts registering a passkey named `name` (step-up): the ceremony id and options for `navigator.credentials.create`. */
  async registerPasskeyStart(name: string): Promise<{ ceremonyId: string; options: WebauthnOptions }> {
    const answer = await this.authed((headers) => this.api.POST("/v1/webauthn/register/start", { headers, body: { name } }));
    return { ceremonyId: answer.ceremony_id, options: answer.options };
  }

  /** Finishes registering a passkey with the browser's answer; this session becomes aal2. */
  registerPasskeyFinish(ceremonyId: string, credential: WebauthnCredential): Promise<PasskeyItem> {
    return this.authed((headers) =>
      this.api.POST("/v1/webauthn/register/finish", { headers, body: { ceremony_id: ceremonyId, credential } }),
    );
  }

  /** Removes one of the user's passkeys (step-up; the last second factor only from an aal2 session). */
  async removePasskey(id: string): Promise<void> {
    await this.authed((headers) =>
      this.api.DELETE("/v1/webauthn/credentials/{id}", { headers, params: { path: { id } } }),
    );
  }

  /** Step-up by passkey, first half: options for `navigator.credentials.get`. */
  async reauthPasskeyStart(): Promise<WebauthnOptions> {
    return (await this.authed((headers) => this.api.POST("/v1/account/reauth/webauthn/start", { headers }))).options;
  }

  /** Step-up by passkey: the assertion renews this session's `auth_time` (and makes it aal2). */
  reauthPasskeyFinish(credential: WebauthnCredential): Promise<{ auth_time: string; aal: Aal }> {
    return this.authed((headers) =>
      this.api.POST("/v1/account/reauth/webauthn/finish", { headers, body: { credential } }),
    );
  }

  /**
   * An authenticated call through `api`, for routes this class does not
   * wrap (the admin API, say): `call` gets the typed client and the headers
   * to send (the bearer token in bearer mode; cookie mode's CSRF header is
   * already on `api`). An expired session is renewed and the call tried
   * once more, as for the wrapped routes. Resolves to the answer's data, or
   * throws its LatchkeyError.
   *
   *     const page = await lk.request((api, headers) =>
   *       api.GET("/v1/admin/users", { headers, params: { query: { limit: 50 } } }));
   */
  request<T>(call: (api: Api, headers: Record<string, string>) => Promise<Outcome<T>>): Promise<T> {
    return this.authed((headers) => call(this.api, headers));
  }

  // --- internals ---

  /** The client half of OPAQUE registration; `start` sends the request and returns the server's answer. */
  private async registration(
    password: string,
    start: (registrationRequest: string) => Promise<{ registration_response: string }>,
  ): Promise<string> {
    await opaqueReady;
    const { clientRegistrationState, registrationRequest } = opaque.startRegistration({ password });
    const { registration_response } = await start(registrationRequest);
    return opaque.finishRegistration({ clientRegistrationState, registrationResponse: registration_response, password })
      .registrationRecord;
  }

  /** Takes a new session: its tokens (bearer mode) and a newly issued device credential. */
  private async accept(session: SessionAnswer, username: string | undefined): Promise<void> {
    if (this.mode === "cookie") return;
    if (!session.session_token || !session.refresh_token) {
      throw new LatchkeyError({ status: 200, code: "invalid_answer", detail: "the session answer has no tokens" });
    }
    this.tokens = { sessionToken: session.session_token, refreshToken: session.refresh_token };
    if (session.device_token) {
      username ??= (await this.whoami()).username;
      await this.deviceStore.set(deviceKey(this.baseUrl, username), session.device_token);
    }
  }

  private async deviceToken(username: string): Promise<string | undefined> {
    if (this.mode === "cookie") return undefined; // the __Host-lk_device cookie
    return (await this.deviceStore.get(deviceKey(this.baseUrl, username))) ?? undefined;
  }

  private async rotate(): Promise<SessionAnswer> {
    if (this.mode === "cookie") {
      const send = () => expect(this.api.POST("/v1/sessions/refresh", { body: {} }));
      const locks = globalThis.navigator?.locks;
      return locks === undefined ? send() : locks.request("latchkey-refresh", send);
    }
    const held = this.tokens;
    if (held === undefined) throw notLoggedIn();
    try {
      const session = await expect(this.api.POST("/v1/sessions/refresh", { body: { refresh_token: held.refreshToken } }));
      if (!session.session_token || !session.refresh_token) {
        throw new LatchkeyError({ status: 200, code: "invalid_answer", detail: "the refresh answer has no tokens" });
      }
      // A login or logout while the refresh was under way wins.
      if (this.tokens === held) this.tokens = { sessionToken: session.session_token, refreshToken: session.refresh_token };
      return session;
    } catch (err) {
      if (err instanceof LatchkeyError && err.status === 401 && this.tokens === held) this.tokens = undefined;
      throw err;
    }
  }

  /**
   * An authenticated call. Bearer mode adds the session token; on 401
   * `unauthorized` (an expired session token) the client refreshes (or
   * takes the tokens a concurrent refresh already got) and tries once more.
   */
  private async authed<T>(call: (headers: Headers_) => Promise<Outcome<T>>): Promise<T> {
    const sent = this.tokens;
    let outcome = await call(this.authHeaders());
    if (isUnauthorized(outcome) && (this.mode === "cookie" || this.tokens !== undefined)) {
      if (this.mode === "cookie" || this.tokens === sent) {
        try {
          await (this.mode === "cookie" ? this.renewCookie() : this.refresh());
        } catch (err) {
          if (err instanceof LatchkeyError && err.status === 401) return expect(Promise.resolve(outcome));
          throw err;
        }
      }
      outcome = await call(this.authHeaders());
    }
    return expect(Promise.resolve(outcome));
  }

  /**
   * Cookie mode, after a 401 `unauthorized`: gets a working session cookie.
   * Single-flight within this client, and tabs take turns through the Web
   * Lock; whoever gets the lock asks whoami first, since another tab may
   * have rotated the shared refresh cookie meanwhile (then there is nothing
   * to do, and one refresh serves every tab).
   */
  private renewCookie(): Promise<void> {
    const renew = async () => {
      const probe = await this.api.GET("/v1/sessions/current", {});
      if (probe.response.ok) return;
      await expect(this.api.POST("/v1/sessions/refresh", { body: {} }));
    };
    const locks = globalThis.navigator?.locks;
    const run = async (): Promise<void> => {
      try {
        if (locks === undefined) await renew();
        else await locks.request("latchkey-refresh", renew);
      } finally {
        this.renewing = undefined;
      }
    };
    this.renewing ??= run();
    return this.renewing;
  }

  private authHeaders(): Headers_ {
    if (this.mode === "cookie") return {};
    if (this.tokens === undefined) throw notLoggedIn();
    return { Authorization: `Bearer ${this.tokens.sessionToken}` };
  }
}

/** A latchkey client; see `LatchkeyClient`. */
export function createClient(options: ClientOptions): LatchkeyClient {
  return new LatchkeyClient(options);
}
