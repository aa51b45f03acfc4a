//! The test client: the product's client library (`latchkey-client`) for
//! registrations and logins that must succeed, and the OPAQUE messages
//! themselves (opaque-ke with the product's suite) where a test needs the
//! wire: refused logins, replays, a client that rejects the KE2.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::domain::opaque::{Argon2idKsf, Suite};
use opaque_ke::{ClientLogin, ClientLoginFinishParameters, CredentialResponse};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

pub fn secret_bytes(secret_b32: &str) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(secret_b32).expect("base32").as_ref().to_vec()
}

/// The code of `secret` for time step `step` (an independent computation
/// through totp-rs, not the service's verification path).
pub fn totp_code(secret_b32: &str, step: u64) -> String {
    totp_rs::Builder::new().with_secret(secret_bytes(secret_b32)).build_noncompliant().generate(step * 30).to_string()
}

/// A successful login's answer.
#[derive(Debug, Clone)]
pub struct Session {
    pub body: Value,
    pub token: String,
    pub refresh: String,
    /// The device credential, when this session issued one.
    pub device_token: Option<String>,
}

impl Session {
    pub fn from_json(body: Value) -> Self {
        let token = body["session_token"].as_str().expect("session_token").to_owned();
        let refresh = body["refresh_token"].as_str().expect("refresh_token").to_owned();
        let device_token = body["device_token"].as_str().map(str::to_owned);
        Self { body, token, refresh, device_token }
    }
}

impl TestApp {
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.expect("request")
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn delete_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    /// The product's client library on this app, sharing the test's HTTP
    /// client.
    pub fn lk(&self) -> latchkey_client::Client {
        latchkey_client::Client::with_http_client(self.address.clone(), self.client.clone())
    }

    /// Full OPAQUE registration with the client library; the finish's
    /// status and body (201 and the user id, or the problem).
    pub async fn register(&self, username: &str, password: &str) -> Registration {
        match self.lk().register(username, password).await {
            Ok(user_id) => Registration { status: StatusCode::CREATED, body: json!({"user_id": user_id}) },
            Err(latchkey_client::Error::Problem(p)) => Registration {
                status: StatusCode::from_u16(p.status).expect("status"),
                body: json!({"code": p.code, "detail": p.detail}),
            },
            Err(e) => panic!("registration failed: {e}"),
        }
    }

    /// Full OPAQUE login, as a real client runs it. `device` is the
    /// login/finish `device` object; a `device_token` key in it is sent as the
    /// top-level `device_token` at start and finish instead. A client whose
    /// KE2 does not verify (wrong password, unknown user) sends no finish:
    /// the answer is then a client-side 401 with code `client_rejected_ke2`.
    pub async fn login_response(&self, username: &str, password: &str, device: Value) -> Answer {
        self.login_response_ksf(username, password, device, Argon2idKsf::default()).await
    }

    /// A guesser's login: a wrong password, so the KE2 is rejected whatever
    /// the key stretching; the cheap one keeps the test's timing out of
    /// Argon2id (a guess takes milliseconds, as an attacker's would with
    /// enough hardware).
    pub async fn guess_response(&self, username: &str, password: &str, device: Value) -> Answer {
        self.login_response_ksf(username, password, device, Argon2idKsf::cheap()).await
    }

    async fn login_response_ksf(&self, username: &str, password: &str, mut device: Value, ksf: Argon2idKsf) -> Answer {
        let token = device.as_object_mut().and_then(|d| d.remove("device_token"));
        let token = token.as_ref().and_then(Value::as_str);
        let (login_id, ke3) = match self.login_messages_ksf(username, password, token, &[], ksf).await {
            Ok(started) => started,
            Err(refused) => return refused,
        };
        let Some(ke3) = ke3 else { return Answer::client_rejected_ke2() };
        let mut body = json!({"login_id": login_id, "credential_finalization": b64(&ke3), "device": device});
        if let Some(token) = token {
            body["device_token"] = json!(token);
        }
        Answer::from(self.post_json("/v1/login/finish", &body).await).await
    }

    /// Runs login/start and the client's side; returns (login_id, KE3), the
    /// KE3 `None` when the client rejects the KE2, or the start's refusal.
    pub async fn login_messages(
        &self,
        username: &str,
        password: &str,
        device_token: Option<&str>,
    ) -> Result<(String, Option<Vec<u8>>), Answer> {
        self.login_messages_with(username, password, device_token, &[]).await
    }

    /// [`Self::login_messages`] with extra headers on login/start (a
    /// browser's cookies).
    pub async fn login_messages_with(
        &self,
        username: &str,
        password: &str,
        device_token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<(String, Option<Vec<u8>>), Answer> {
        self.login_messages_ksf(username, password, device_token, headers, Argon2idKsf::default()).await
    }

    async fn login_messages_ksf(
        &self,
        username: &str,
        password: &str,
        device_token: Option<&str>,
        headers: &[(&str, &str)],
        ksf: Argon2idKsf,
    ) -> Result<(String, Option<Vec<u8>>), Answer> {
        let start = ClientLogin::<Suite>::start(&mut OsRng, password.as_bytes()).expect("client start");
        let mut body = json!({"username": username, "credential_request": b64(&start.message.serialize())});
        if let Some(token) = device_token {
            body["device_token"] = json!(token);
        }
        let mut request = self.client.post(self.url("/v1/login/start")).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let res = request.send().await.expect("request");
        if res.status() != StatusCode::OK {
            return Err(Answer::from(res).await);
        }
        let body: Value = res.json().await.expect("json");
        let login_id = body["login_id"].as_str().expect("login_id").to_owned();
        let ke2 = unb64(body["credential_response"].as_str().expect("credential_response"));
        assert_eq!(ke2.len(), 320, "KE2 size");
        let password = password.to_owned();
        let ke3 = tokio::task::spawn_blocking(move || {
            let response = CredentialResponse::<Suite>::deserialize(&ke2).expect("KE2 parses");
            start
                .state
                .finish(
                    &mut OsRng,
                    password.as_bytes(),
                    response,
                    ClientLoginFinishParameters::new(None, Default::default(), Some(&ksf)),
                )
                .ok()
                .map(|result| result.message.serialize().to_vec())
        })
        .await
        .expect("join");
        Ok((login_id, ke3))
    }

    /// login/start and the client's side for the right password: (login_id, KE3).
    pub async fn login_ke3(&self, username: &str, password: &str) -> (String, Vec<u8>) {
        match self.login_messages(username, password, None).await {
            Ok((login_id, Some(ke3))) => (login_id, ke3),
            Ok((_, None)) => panic!("the client rejected the KE2"),
            Err(refused) => panic!("login/start refused: {refused:?}"),
        }
    }

    /// A login that must succeed without a second factor, with the client
    /// library.
    pub async fn login(&self, username: &str, password: &str, fingerprint: &str) -> Session {
        let device = latchkey_client::DeviceInfo {
            fingerprint: Some(fingerprint.to_owned()),
            name: Some("test device".to_owned()),
            device_token: None,
        };
        match self.lk().login(username, password, &device).await {
            Ok(latchkey_client::LoginOutcome::Session(session)) => {
                Session::from_json(serde_json::to_value(&session).expect("json"))
            }
            other => panic!("login of {username}: {other:?}"),
        }
    }

    pub async fn register_and_login(&self, username: &str, password: &str) -> Session {
        let res = self.register(username, password).await;
        assert_eq!(res.status(), StatusCode::CREATED, "register: {}", res.body);
        self.login(username, password, "device-1").await
    }

    /// Starts TOTP enrolment; returns the base32 secret.
    pub async fn enroll_totp(&self, token: &str) -> String {
        let res = self.client.post(self.url("/v1/totp/enroll")).bearer_auth(token).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK, "enroll: {}", res.text().await.unwrap_or_default());
        let body: Value = res.json().await.expect("json");
        body["secret"].as_str().expect("secret").to_owned()
    }

    /// Enrols and confirms TOTP with the current step's code (the session
    /// becomes aal2); returns the base32 secret.
    pub async fn enable_totp(&self, token: &str) -> String {
        let secret = self.enroll_totp(token).await;
        let step = u64::try_from(chrono::Utc::now().timestamp()).expect("time") / 30;
        let res = self
            .client
            .post(self.url("/v1/totp/confirm"))
            .bearer_auth(token)
            .json(&json!({"code": totp_code(&secret, step)}))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK, "confirm: {}", res.text().await.unwrap_or_default());
        secret
    }

    pub async fn whoami(&self, token: &str) -> reqwest::Response {
        self.get_auth("/v1/sessions/current", token).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_json("/v1/sessions/refresh", &json!({"refresh_token": refresh_token})).await
    }

    pub async fn refreshed(&self, refresh_token: &str) -> Session {
        let res = self.refresh(refresh_token).await;
        assert_eq!(res.status(), StatusCode::OK, "refresh: {}", res.text().await.unwrap_or_default());
        Session::from_json(res.json().await.expect("json"))
    }

    /// Audit event names in order.
    pub async fn audit_events(&self) -> Vec<String> {
        use sea_orm::{EntityTrait as _, QueryOrder as _};
        entity::audit_events::Entity::find()
            .order_by_asc(entity::audit_events::Column::Id)
            .all(self.app_db.conn())
            .await
            .expect("audit rows")
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}

/// What a login came to: the server's answer, or the client's own refusal
/// of a KE2 that does not verify (no request made).
#[derive(Debug)]
pub struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    async fn from(res: reqwest::Response) -> Self {
        let (status, headers) = (res.status(), res.headers().clone());
        Self { status, headers, body: res.text().await.expect("body") }
    }

    fn client_rejected_ke2() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            headers: reqwest::header::HeaderMap::new(),
            body: json!({"code": "client_rejected_ke2"}).to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        &self.headers
    }

    pub async fn json<T: serde::de::DeserializeOwned>(self) -> serde_json::Result<T> {
        serde_json::from_str(&self.body)
    }
}

/// The outcome of a registration.
#[derive(Debug)]
pub struct Registration {
    status: StatusCode,
    pub body: Value,
}

impl Registration {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub async fn json<T: serde::de::DeserializeOwned>(self) -> serde_json::Result<T> {
        serde_json::from_value(self.body)
    }
}
