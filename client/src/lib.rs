//! A client for the latchkey authentication service: the client half of
//! OPAQUE (RFC 9807) with exactly the service's suite, the TOTP step,
//! refresh rotation, device credentials, sessions, password change and
//! reset, and JWTs for other services.
//!
//! ```no_run
//! use latchkey_client::{Client, DeviceInfo, LoginOutcome, SecondFactor};
//!
//! # async fn demo() -> Result<(), latchkey_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! client.register("alice", "correct horse battery staple").await?;
//! let session = match client.login("alice", "correct horse battery staple", &DeviceInfo::default()).await? {
//!     LoginOutcome::Session(session) => session,
//!     LoginOutcome::MfaRequired(step) => {
//!         client.login_totp(&step.mfa_token, SecondFactor::Code("123456".into())).await?
//!     }
//! };
//! // Keep session.device_token (when present) and send it with the next login.
//! let me = client.whoami(&session.session_token).await?;
//! assert_eq!(me.username, "alice");
//! let session = client.refresh(&session.refresh_token).await?;
//! client.logout(&session.session_token).await?;
//! # Ok(())
//! # }
//! ```

pub mod suite;
mod types;

/// The Rust blocks of the repository's README, compiled as doctests so the
/// documented example cannot drift from the crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration, ClientRegistrationFinishParameters,
    CredentialResponse, RegistrationResponse,
};
use rand::rngs::OsRng;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

pub use suite::{Argon2idKsf, Suite};
pub use types::*;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with a problem (RFC 9457): `code` says what.
    #[error("{0}")]
    Problem(Problem),
    /// The login failed: unknown user or wrong password (the client could
    /// not verify the server's answer, so it sent nothing more), or the
    /// service refused the finish.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The connection or the answer's encoding failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The service's answer did not follow the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl Error {
    /// The problem `code` (`unauthorized`, `rate_limited`, …), if the
    /// service answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Problem(p) => Some(&p.code),
            Error::InvalidCredentials => Some("invalid_credentials"),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Refuses a base URL that would send tokens in clear: `https://`, or
/// `http://` to a loopback address only. OPAQUE keeps the password from an
/// eavesdropper, but not the session, refresh, MFA and reset tokens, the
/// TOTP codes, nor a registration record, which a man in the middle could
/// replace with one for a password of their own.
pub fn check_url(base_url: &str) -> Result<()> {
    let rest = match base_url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => return Ok(()),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        _ => return Err(protocol(format!("not an http(s) URL: {base_url}"))),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(protocol(format!("refusing plain http to {host}: use https (http is for loopback only)")))
    }
}

fn protocol(what: impl std::fmt::Display) -> Error {
    Error::Protocol(what.to_string())
}

/// A latchkey service at one base URL.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    ksf: Argon2idKsf,
}

impl Client {
    /// A client for the service at `base_url` (`https://auth.example.com`;
    /// plain `http://` only to a loopback address, see [`check_url`]). It
    /// follows no redirects (the API makes none, and a redirect would carry
    /// a token-bearing body elsewhere) and gives up on a silent server.
    pub fn new(base_url: impl Into<String>) -> Result<Self> {
        let base_url = base_url.into();
        check_url(&base_url)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("latchkey-client/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self::with_http_client(base_url, http))
    }

    /// The same with a configured `reqwest::Client` (timeouts, roots,
    /// proxy), used as it is: the caller answers for its redirect policy and
    /// for the URL's scheme.
    pub fn with_http_client(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        let base = base_url.into().trim_end_matches('/').to_owned();
        Self { http, base, ksf: Argon2idKsf::default() }
    }

    /// Another key stretching setting: only for load generators whose users
    /// were registered with the same one ([`Argon2idKsf::cheap`]).
    pub fn with_ksf(mut self, ksf: Argon2idKsf) -> Self {
        self.ksf = ksf;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        if res.status().is_success() { Ok(res) } else { Err(Error::Problem(Problem::from_response(res).await)) }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<T> {
        Ok(self.call(method, path, token, body).await?.json().await?)
    }

    /// Runs the client's half of an OPAQUE registration against
    /// `start_path`/`finish_path`, whose bodies get `extra` too.
    async fn registration(
        &self,
        start_path: &str,
        finish_path: &str,
        token: Option<&str>,
        password: &str,
        extra: Value,
    ) -> Result<reqwest::Response> {
        let start = ClientRegistration::<Suite>::start(&mut OsRng, password.as_bytes()).map_err(protocol)?;
        let mut body = extra.clone();
        body["registration_request"] = json!(B64.encode(start.message.serialize()));
        let answer: Value = self.json(Method::POST, start_path, token, Some(body)).await?;
        let response = answer["registration_response"].as_str().ok_or_else(|| protocol("no registration_response"))?;
        let response = B64.decode(response).map_err(protocol)?;
        let response = RegistrationResponse::<Suite>::deserialize(&response).map_err(protocol)?;
        let (password, ksf) = (password.to_owned(), self.ksf);
        let record = tokio::task::spawn_blocking(move || {
            let parameters = ClientRegistrationFinishParameters::new(Default::default(), Some(&ksf));
            start.state.finish(&mut OsRng, password.as_bytes(), response, parameters)
        })
        .await
        .map_err(protocol)?
        .map_err(protocol)?;
        let mut body = extra;
        body["registration_record"] = json!(B64.encode(record.message.serialize()));
        self.call(Method::POST, finish_path, token, Some(body)).await
    }

    /// Registers a new account; answers its user id (409 `conflict` when
    /// the name is taken).
    pub async fn register(&self, username: &str, password: &str) -> Result<Uuid> {
        let name = json!({"username": username});
        let res = self.registration("/v1/registration/start", "/v1/registration/finish", None, password, name).await?;
        let registered: Registered = res.json().await?;
        Ok(registered.user_id)
    }

    /// Logs in: a session, or the second step when TOTP is on. A wrong
    /// password or an unknown name is [`Error::InvalidCredentials`], and
    /// like every real OPAQUE client this one then sends no finish.
    pub async fn login(&self, username: &str, password: &str, device: &DeviceInfo) -> Result<LoginOutcome> {
        self.login_start(username, password, device).await?.finish().await
    }

    /// The first half of [`Client::login`]: login/start and the client's
    /// side of OPAQUE (the key stretching). The answer sends login/finish.
    pub async fn login_start(&self, username: &str, password: &str, device: &DeviceInfo) -> Result<PendingLogin<'_>> {
        let start = ClientLogin::<Suite>::start(&mut OsRng, password.as_bytes()).map_err(protocol)?;
        let mut body = json!({"username": username, "credential_request": B64.encode(start.message.serialize())});
        if let Some(token) = &device.device_token {
            body["device_token"] = json!(token);
        }
        let started: Value = self.json(Method::POST, "/v1/login/start", None, Some(body)).await?;
        let login_id = started["login_id"].as_str().ok_or_else(|| protocol("no login_id"))?.to_owned();
        let ke2 = started["credential_response"].as_str().ok_or_else(|| protocol("no credential_response"))?;
        let ke2 = CredentialResponse::<Suite>::deserialize(&B64.decode(ke2).map_err(protocol)?).map_err(protocol)?;
        let (password, ksf) = (password.to_owned(), self.ksf);
        let finished = tokio::task::spawn_blocking(move || {
            let parameters = ClientLoginFinishParameters::new(None, Default::default(), Some(&ksf));
            start.state.finish(&mut OsRng, password.as_bytes(), ke2, parameters)
        })
        .await
        .map_err(protocol)?
        .map_err(|_| Error::InvalidCredentials)?;
        let mut body = json!({
            "login_id": login_id,
            "credential_finalization": B64.encode(finished.message.serialize()),
            "device": {"fingerprint": device.fingerprint, "name": device.name},
        });
        if let Some(token) = &device.device_token {
            body["device_token"] = json!(token);
        }
        Ok(PendingLogin { client: self, body })
    }

    /// The second step: a TOTP code or a recovery code for the MFA token.
    pub async fn login_totp(&self, mfa_token: &str, factor: SecondFactor) -> Result<Session> {
        let body = match factor {
            SecondFactor::Code(code) => json!({"mfa_token": mfa_token, "code": code}),
            SecondFactor::RecoveryCode(code) => json!({"mfa_token": mfa_token, "recovery_code": code}),
        };
        self.json(Method::POST, "/v1/login/totp", None, Some(body)).await
    }

    /// Rotates the session's tokens. The refresh token is single-use: keep
    /// the answer's, and never send the old one again (a reuse revokes the
    /// session).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session> {
        self.json(Method::POST, "/v1/sessions/refresh", None, Some(json!({"refresh_token": refresh_token}))).await
    }

    /// The session behind the token.
    pub async fn whoami(&self, token: &str) -> Result<WhoAmI> {
        self.json(Method::GET, "/v1/sessions/current", Some(token), None).await
    }

    /// The caller's active sessions.
    pub async fn sessions(&self, token: &str) -> Result<Vec<SessionInfo>> {
        let list: SessionList = self.json(Method::GET, "/v1/sessions", Some(token), None).await?;
        Ok(list.sessions)
    }

    /// Revokes one of the caller's sessions.
    pub async fn revoke(&self, token: &str, session_id: Uuid) -> Result<()> {
        self.call(Method::DELETE, &format!("/v1/sessions/{session_id}"), Some(token), None).await.map(drop)
    }

    /// Revokes every session of the caller but this one; answers how many.
    pub async fn revoke_others(&self, token: &str) -> Result<u64> {
        let revoked: Value = self.json(Method::DELETE, "/v1/sessions?scope=others", Some(token), None).await?;
        revoked["revoked"].as_u64().ok_or_else(|| protocol("no revoked count"))
    }

    /// Logs out: revokes this session.
    pub async fn logout(&self, token: &str) -> Result<()> {
        self.call(Method::DELETE, "/v1/sessions/current", Some(token), None).await.map(drop)
    }

    /// The devices the caller has logged in from.
    pub async fn devices(&self, token: &str) -> Result<Vec<Device>> {
        let list: DeviceList = self.json(Method::GET, "/v1/devices", Some(token), None).await?;
        Ok(list.devices)
    }

    /// Changes the password (OPAQUE registration again). Needs a recent
    /// login (else `reauthentication_required`: log in again first) and aal2
    /// when TOTP is on. Every other session of the user is revoked.
    pub async fn change_password(&self, token: &str, new_password: &str) -> Result<()> {
        self.registration(
            "/v1/account/password/start",
            "/v1/account/password/finish",
            Some(token),
            new_password,
            json!({}),
        )
        .await
        .map(drop)
    }

    /// Sets a new password with an admin-issued reset token (`lk_t_`); every
    /// session of the user is revoked.
    pub async fn reset_password(&self, reset_token: &str, new_password: &str) -> Result<()> {
        let extra = json!({"reset_token": reset_token});
        self.registration("/v1/account/reset/start", "/v1/account/reset/finish", None, new_password, extra)
            .await
            .map(drop)
    }

    /// A short-lived JWT for the session, for services that verify offline.
    pub async fn jwt(&self, token: &str) -> Result<Jwt> {
        self.json(Method::POST, "/v1/tokens/jwt", Some(token), None).await
    }
}

/// A login whose server answer verified: [`PendingLogin::finish`] sends
/// the proof (login/finish), within the 60 s the login id lives.
pub struct PendingLogin<'c> {
    client: &'c Client,
    body: Value,
}

impl PendingLogin<'_> {
    pub async fn finish(self) -> Result<LoginOutcome> {
        let answer: Value = match self.client.json(Method::POST, "/v1/login/finish", None, Some(self.body)).await {
            Err(Error::Problem(p)) if p.code == "invalid_credentials" => return Err(Error::InvalidCredentials),
            other => other?,
        };
        if answer["mfa_required"] == json!(true) {
            return Ok(LoginOutcome::MfaRequired(serde_json::from_value(answer).map_err(protocol)?));
        }
        Ok(LoginOutcome::Session(serde_json::from_value(answer).map_err(protocol)?))
    }
}

impl Problem {
    async fn from_response(res: reqwest::Response) -> Self {
        let status = res.status();
        let retry_after =
            res.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let code = body["code"].as_str().map(str::to_owned).unwrap_or_else(|| default_code(status).to_owned());
        Problem { status: status.as_u16(), code, detail: body["detail"].as_str().map(str::to_owned), retry_after }
    }
}

/// A code for an answer without a problem body (a proxy's error page).
fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        429 => "rate_limited",
        500..=599 => "unavailable",
        _ => "invalid_request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://auth.example",
            "http://127.0.0.1:8080",
            "http://localhost/",
            "http://[::1]:80",
            "HTTP://127.8.9.1",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://auth.example",
            "http://192.168.1.10:8080",
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1@evil.example/",
            "ftp://127.0.0.1",
            "127.0.0.1:8080",
        ] {
            assert!(check_url(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let device =
            DeviceInfo { device_token: Some("lk_d_SECRET".into()), fingerprint: None, name: Some("laptop".into()) };
        let step = MfaStep { mfa_token: "lk_m_SECRET".into(), mfa_expires_at: chrono::Utc::now() };
        let shown = format!(
            "{device:?} {step:?} {:?} {:?} {:?}",
            LoginOutcome::MfaRequired(step.clone()),
            SecondFactor::Code("123456".into()),
            SecondFactor::RecoveryCode("abcde-fghij".into())
        );
        for secret in ["SECRET", "123456", "abcde-fghij"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("laptop"), "{shown}");
    }
}
