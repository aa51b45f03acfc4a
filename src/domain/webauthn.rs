//! Passkeys (WebAuthn) as a second factor and for step-up, with kanidm's
//! `webauthn-rs` (its safe `Passkey` API: user verification required; no
//! CBOR or COSE written here).
//!
//! ```text
//!   register/start (session, step-up, name) --> options + ceremony_id; state sealed, 5 min, once
//!   register/finish (ceremony_id, credential) --> passkey stored (sealed), session -> aal2
//!
//!   login/finish (password ok, a second factor on) --> mfa_token, methods [totp, webauthn]
//!   login/webauthn/start (mfa_token)               --> options; state sealed beside the mfa token
//!   login/webauthn/finish (mfa_token, assertion)   --> aal2 session (the /v1/login/totp path)
//!
//!   account/reauth/webauthn/start|finish (session) --> auth_time = now, aal2 (step-up)
//! ```
//!
//! Every challenge is single-use: finish takes its state out of the fast
//! store (GETDEL) before it looks at the answer, so an assertion presented
//! twice finds nothing the second time, and an assertion for another
//! challenge fails its signature check. A failed assertion counts as a
//! failure in the login's lockout scope, like a bad TOTP code.
//!
//! The signature counter: webauthn-rs refuses an assertion whose counter is
//! not above the one stored when the challenge was made, and the store
//! updates the credential only if its counter is still below the new one
//! (compare-and-set), so two assertions racing with one counter cannot both
//! pass. Either refusal is audited `webauthn.counter_regression`: the
//! authenticator was probably cloned. Authenticators without a counter
//! (most synced passkeys) report 0 and rely on the single-use challenges.
//!
//! At rest the credential (public key, counter, transports, backup flags)
//! is webauthn-rs's `Passkey` as JSON, sealed by the keyring for its user
//! like a TOTP secret; the ceremony state in the fast store is sealed too.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration, Url, WebauthnBuilder, WebauthnError,
};
use zeroize::Zeroizing;

use super::audit::{self, events};
use super::core::{ClientInfo, Core};
use super::keyring::{Owner, Sealed, SealedColumn};
use super::lockout::Scope;
use super::ratelimit::Action;
use super::sessions::CurrentSession;
use super::states::Aal;
use super::tokens;
use super::{Error, Result};
use crate::store::FastStore as _;
use crate::store::webauthn::{self as store, CredentialRecord};
use crate::store::{sessions as session_store, totp as totp_store};

pub use webauthn_rs::Webauthn;
pub use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse,
};

/// How long a ceremony may take between start and finish (WebAuthn's
/// recommended authenticator timeout is the same).
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// Passkeys per user.
pub const MAX_CREDENTIALS: u64 = 10;
pub const MAX_NAME_CHARS: usize = 64;

/// The relying party, from configuration: `rp_id` must be `rp_origin`'s
/// host or a registrable suffix of it.
pub fn relying_party(rp_id: &str, rp_origin: &str, rp_name: &str) -> Result<Arc<Webauthn>> {
    let origin = Url::parse(rp_origin)
        .map_err(|e| Error::InvalidRequest(format!("webauthn.rp_origin {rp_origin:?} is not a URL: {e}")))?;
    let refused = |e: WebauthnError| {
        Error::InvalidRequest(format!("webauthn: rp_id {rp_id:?} does not fit rp_origin {rp_origin:?}: {e}"))
    };
    let webauthn = WebauthnBuilder::new(rp_id, &origin)
        .map_err(refused)?
        .rp_name(rp_name)
        .timeout(CEREMONY_TTL)
        .build()
        .map_err(refused)?;
    Ok(Arc::new(webauthn))
}

/// One of the user's passkeys, as lists show it.
#[derive(Debug, Clone)]
pub struct CredentialInfo {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<&CredentialRecord> for CredentialInfo {
    fn from(r: &CredentialRecord) -> Self {
        Self { id: r.id, name: r.name.clone(), created_at: r.created_at, last_used_at: r.last_used_at }
    }
}

/// The kinds of second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FactorKind {
    Totp,
    Webauthn,
}

/// One second factor of a user, as an admin sees it.
#[derive(Debug, Clone)]
pub struct FactorInfo {
    pub kind: FactorKind,
    /// The passkey's id (none for TOTP: a user has at most one).
    pub id: Option<Uuid>,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Registration state between start and finish (sealed in the fast store).
#[derive(Serialize, Deserialize)]
struct PendingRegistration {
    user_id: Uuid,
    session_id: Uuid,
    name: String,
    state: PasskeyRegistration,
    expires_at: DateTime<Utc>,
}

/// Assertion state between start and finish (sealed in the fast store).
#[derive(Serialize, Deserialize)]
struct PendingAssertion {
    user_id: Uuid,
    state: PasskeyAuthentication,
    expires_at: DateTime<Utc>,
}

fn encode_id(id: &CredentialID) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_ref())
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(format!("name must be 1 to {MAX_NAME_CHARS} printable characters")));
    }
    Ok(name.to_owned())
}

fn ttl_until(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (expires_at - now).to_std().unwrap_or(Duration::ZERO)
}

impl Core {
    async fn put_sealed<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let plain = Zeroizing::new(serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?);
        self.fast.set(key, &self.seal.seal(key, &plain), ttl_until(expires_at, now)).await?;
        Ok(())
    }

    /// Takes a sealed value out of the fast store (once); `None` when it is
    /// missing, altered or moved from another key.
    async fn take_sealed<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let stored = self.fast.get_del(key).await?;
        let opened = stored.as_deref().and_then(|sealed| self.seal.open(key, sealed));
        Ok(opened.as_deref().and_then(|plain| serde_json::from_slice(plain).ok()))
    }

    async fn open_passkey(&self, record: &CredentialRecord) -> Result<Passkey> {
        let plain = self
            .keyring
            .open_sealed(
                SealedColumn::WebauthnCredential,
                Owner::User(record.user_id),
                &Sealed { key_id: record.key_id, ciphertext: record.ciphertext.clone() },
            )
            .await?;
        serde_json::from_slice(&plain)
            .map_err(|_| Error::Integrity(format!("the passkey {} does not parse", record.id)))
    }

    async fn seal_passkey(&self, user_id: Uuid, passkey: &Passkey, now: DateTime<Utc>) -> Result<Sealed> {
        let plain = Zeroizing::new(serde_json::to_vec(passkey).map_err(|e| Error::Internal(e.to_string()))?);
        self.keyring.seal(SealedColumn::WebauthnCredential, Owner::User(user_id), &plain, now).await
    }

    /// Whether the user has any second factor on (TOTP or a passkey).
    pub(super) async fn has_second_factor(&self, user_id: Uuid) -> Result<bool> {
        Ok(totp_store::is_enabled(&self.db, user_id).await? || store::count(&self.db, user_id).await? > 0)
    }

    /// Starts registering a passkey named `name`: the options for
    /// `navigator.credentials.create`, and the id naming this ceremony.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn webauthn_register_start(
        &self,
        current: &CurrentSession,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, CreationChallengeResponse)> {
        self.require_recent_auth(current, now)?;
        // A new factor is added only by a session that proved an existing
        // one: an aal1 session would otherwise make itself aal2.
        self.require_aal2_if_second_factor(current).await?;
        let name = check_name(name)?;
        let existing = store::list(&self.db, current.user_id).await?;
        if existing.len() as u64 >= MAX_CREDENTIALS {
            return Err(Error::Conflict(format!("at most {MAX_CREDENTIALS} passkeys per account; remove one first")));
        }
        let mut exclude = Vec::with_capacity(existing.len());
        for record in &existing {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&record.credential_id)
                .map_err(|_| Error::Integrity(format!("passkey {} has a malformed credential id", record.id)))?;
            exclude.push(CredentialID::from(bytes));
        }
        let (options, state) = self
            .webauthn
            .start_passkey_registration(current.user_id, &current.username, &current.username, Some(exclude))
            .map_err(|e| Error::Internal(format!("WebAuthn registration could not start: {e}")))?;
        let ceremony_id = tokens::random_id();
        let expires_at = now + chrono::Duration::from_std(CEREMONY_TTL).unwrap_or_default();
        let pending =
            PendingRegistration { user_id: current.user_id, session_id: current.session_id, name, state, expires_at };
        let key = self.keys.tagged("webauthn-reg", &tokens::hash(&ceremony_id));
        self.put_sealed(&key, &pending, expires_at, now).await?;
        Ok((ceremony_id, options))
    }

    /// Finishes a registration: the passkey is stored, this session
    /// becomes aal2 (it just proved a second factor), audited.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn webauthn_register_finish(
        &self,
        current: &CurrentSession,
        ceremony_id: &str,
        credential: &RegisterPublicKeyCredential,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<CredentialInfo> {
        self.require_recent_auth(current, now)?;
        self.require_aal2_if_second_factor(current).await?;
        let no_ceremony = || Error::InvalidRequest("no passkey registration was started with this ceremony_id".into());
        if ceremony_id.is_empty() || ceremony_id.len() > 64 {
            return Err(no_ceremony());
        }
        let key = self.keys.tagged("webauthn-reg", &tokens::hash(ceremony_id));
        let pending: PendingRegistration = self
            .take_sealed(&key)
            .await?
            .filter(|p: &PendingRegistration| {
                p.expires_at > now && p.user_id == current.user_id && p.session_id == current.session_id
            })
            .ok_or_else(no_ceremony)?;
        let passkey = self.webauthn.finish_passkey_registration(credential, &pending.state).map_err(|e| {
            tracing::info!(error = %e, "a passkey registration was refused");
            Error::InvalidRequest("the authenticator's answer was refused".into())
        })?;
        let sealed = self.seal_passkey(current.user_id, &passkey, now).await?;
        let record = CredentialRecord {
            id: Uuid::now_v7(),
            user_id: current.user_id,
            credential_id: encode_id(passkey.cred_id()),
            name: pending.name,
            key_id: sealed.key_id,
            ciphertext: sealed.ciphertext,
            sign_count: 0,
            created_at: now,
            last_used_at: None,
        };
        let event = self
            .audit
            .event(events::WEBAUTHN_REGISTER, client, now)
            .user(current.user_id)
            .session(current.session_id)
            .device_opt(current.device_id.as_deref())
            .sealed(serde_json::json!({ "credential": record.id, "name": record.name }))
            .await?;
        store::insert(&self.db, &record, current.session_id, &[event]).await.map_err(|e| match Error::from(e) {
            Error::Conflict(_) => Error::Conflict("this authenticator is registered already".into()),
            other => other,
        })?;
        // The cached copy still says aal1.
        self.session_cache.evict(&[(current.session_id, current.token_hash.clone())]).await;
        Ok(CredentialInfo::from(&record))
    }

    /// The caller's passkeys.
    pub async fn webauthn_credentials(&self, current: &CurrentSession) -> Result<Vec<CredentialInfo>> {
        Ok(store::list(&self.db, current.user_id).await?.iter().map(CredentialInfo::from).collect())
    }

    /// Removes one of the caller's passkeys (step-up; removing the last
    /// second factor needs an aal2 session).
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn webauthn_remove(
        &self,
        current: &CurrentSession,
        id: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(current, now)?;
        let credentials = store::list(&self.db, current.user_id).await?;
        if !credentials.iter().any(|c| c.id == id) {
            return Err(Error::NotFound);
        }
        // As for TOTP: removing a factor needs a session that proved one,
        // the last one or not (an aal1 session must not trade a passkey for
        // a weaker factor, nor race two removals to none).
        if current.aal < Aal::Aal2 {
            return Err(Error::Forbidden);
        }
        let event = self
            .audit
            .event(events::WEBAUTHN_REMOVE, client, now)
            .user(current.user_id)
            .session(current.session_id)
            .device_opt(current.device_id.as_deref())
            .sealed(serde_json::json!({ "credential": id }))
            .await?;
        if !store::remove(&self.db, current.user_id, id, &[event]).await? {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// A challenge for the user's passkeys, its state sealed under `key`.
    async fn start_assertion(&self, user_id: Uuid, key: &str, now: DateTime<Utc>) -> Result<RequestChallengeResponse> {
        let records = store::list(&self.db, user_id).await?;
        if records.is_empty() {
            return Err(Error::InvalidRequest("this account has no passkey".into()));
        }
        let mut passkeys = Vec::with_capacity(records.len());
        for record in &records {
            passkeys.push(self.open_passkey(record).await?);
        }
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| Error::Internal(format!("WebAuthn authentication could not start: {e}")))?;
        let expires_at = now + chrono::Duration::from_std(CEREMONY_TTL).unwrap_or_default();
        self.put_sealed(key, &PendingAssertion { user_id, state, expires_at }, expires_at, now).await?;
        Ok(options)
    }

    /// Checks an assertion against the challenge stored under `key` (taken
    /// out: once) and records the credential's use. `false` for anything
    /// that does not prove the user's passkey now; a counter that did not
    /// move forward is audited as a possibly cloned authenticator.
    pub(super) async fn verify_assertion(
        &self,
        user_id: Uuid,
        key: &str,
        credential: &PublicKeyCredential,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(pending) =
            self.take_sealed::<PendingAssertion>(key).await?.filter(|p| p.expires_at > now && p.user_id == user_id)
        else {
            return Ok(false);
        };
        let presented_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential.raw_id.as_ref());
        let result = match self.webauthn.finish_passkey_authentication(credential, &pending.state) {
            Ok(result) => result,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                let record = store::find_by_credential_id(&self.db, user_id, &presented_id).await?;
                self.counter_regression(user_id, record.as_ref(), client, now).await?;
                return Ok(false);
            }
            Err(e) => {
                tracing::info!(error = %e, "a passkey assertion was refused");
                return Ok(false);
            }
        };
        let Some(record) = store::find_by_credential_id(&self.db, user_id, &encode_id(result.cred_id())).await? else {
            // Removed since the challenge was made.
            return Ok(false);
        };
        let mut passkey = self.open_passkey(&record).await?;
        passkey.update_credential(&result);
        let sealed = self.seal_passkey(user_id, &passkey, now).await?;
        let counter = i64::from(result.counter());
        if !store::record_use(&self.db, &record, (sealed.key_id, sealed.ciphertext), counter, now).await? {
            // Another assertion with this counter (or a later one) won.
            self.counter_regression(user_id, Some(&record), client, now).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn counter_regression(
        &self,
        user_id: Uuid,
        record: Option<&CredentialRecord>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        tracing::warn!(user_id = %user_id, "a passkey's signature counter went backwards: possibly a cloned authenticator");
        let details = serde_json::json!({
            "credential": record.map(|r| r.id),
            "name": record.map(|r| r.name.clone()),
            "stored_counter": record.map(|r| r.sign_count),
        });
        let event = self
            .audit
            .event(events::WEBAUTHN_COUNTER_REGRESSION, client, now)
            .outcome(audit::FAILURE)
            .user(user_id)
            .sealed(details)
            .await?;
        self.audit.append(&[event]).await
    }

    /// The passkey challenge of a login waiting for its second factor.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn login_webauthn_start(
        &self,
        mfa_token: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<RequestChallengeResponse> {
        let (hash, pending) = self.peek_mfa(mfa_token, now).await?;
        tracing::Span::current().record("user_id", tracing::field::display(pending.login.user_id));
        self.enforce(Action::Totp, client, Some(&pending.login.username)).await?;
        self.second_factor_admitted(&pending.login.scope, now).await?;
        let key = self.keys.tagged_part("mfa", &hash, "webauthn");
        self.start_assertion(pending.login.user_id, &key, now).await
    }

    /// Step-up by passkey, first half: a challenge for the caller's
    /// passkeys.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn reauth_webauthn_start(
        &self,
        current: &CurrentSession,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<RequestChallengeResponse> {
        self.enforce(Action::Totp, client, Some(&current.username)).await?;
        let key = self.keys.tagged_part("reauth", &current.session_id.to_string(), "webauthn");
        self.start_assertion(current.user_id, &key, now).await
    }

    /// Step-up by passkey, second half: a valid assertion moves this
    /// session's `auth_time` to now (as a password login would) and makes
    /// it aal2 (password and passkey). A failed one counts as a failure.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn reauth_webauthn_finish(
        &self,
        current: &CurrentSession,
        credential: &PublicKeyCredential,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>> {
        self.enforce(Action::Totp, client, Some(&current.username)).await?;
        let scope = Scope::Account(current.user_id);
        self.second_factor_admitted(&scope, now).await?;
        let key = self.keys.tagged_part("reauth", &current.session_id.to_string(), "webauthn");
        if !self.verify_assertion(current.user_id, &key, credential, client, now).await? {
            self.second_factor_failed(&scope, current.user_id, Some(current.session_id), client, now).await?;
            return Err(Error::InvalidCredentials);
        }
        let auth_time = chrono::SubsecRound::trunc_subsecs(now, 6);
        let event = self
            .audit
            .event(events::SESSION_REAUTH, client, now)
            .user(current.user_id)
            .session(current.session_id)
            .device_opt(current.device_id.as_deref())
            .build();
        if !session_store::reauthenticated(
            &self.db,
            current.user_id,
            current.session_id,
            auth_time,
            Aal::Aal2,
            &[event],
        )
        .await?
        {
            return Err(Error::Unauthorized);
        }
        self.session_cache.evict(&[(current.session_id, current.token_hash.clone())]).await;
        Ok(auth_time)
    }

    /// A user's second factors (admin view).
    pub async fn admin_second_factors(&self, user_id: Uuid) -> Result<Vec<FactorInfo>> {
        crate::store::users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        let mut factors = Vec::new();
        if let Some(totp) = totp_store::find(&self.db, user_id).await?
            && let Some(confirmed_at) = totp.confirmed_at
        {
            let last_used_at = totp
                .last_used_step
                .and_then(|step| step.checked_mul(i64::try_from(super::totp::STEP_SECS).unwrap_or(30)))
                .and_then(|unix| DateTime::from_timestamp(unix, 0));
            factors.push(FactorInfo {
                kind: FactorKind::Totp,
                id: None,
                name: None,
                created_at: confirmed_at,
                last_used_at,
            });
        }
        factors.extend(store::list(&self.db, user_id).await?.iter().map(|r| FactorInfo {
            kind: FactorKind::Webauthn,
            id: Some(r.id),
            name: Some(r.name.clone()),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        }));
        Ok(factors)
    }

    /// An admin removes one of a user's passkeys (a lost authenticator).
    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_remove_webauthn(
        &self,
        admin: &CurrentSession,
        user_id: Uuid,
        credential: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(admin, now)?;
        let event = self
            .audit
            .event(events::WEBAUTHN_REMOVED_BY_ADMIN, client, now)
            .user(user_id)
            .session(admin.session_id)
            .sealed(serde_json::json!({ "credential": credential, "admin": self.audit.pseudonym(admin.user_id) }))
            .await?;
        if !store::remove(&self.db, user_id, credential, &[event]).await? {
            return Err(Error::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_must_fit_the_origin() {
        assert!(relying_party("localhost", "http://localhost:8080", "latchkey").is_ok());
        assert!(relying_party("example.com", "https://id.example.com", "latchkey").is_ok());
        assert!(relying_party("example.com", "https://id.other.com", "latchkey").is_err());
        assert!(relying_party("localhost", "not a url", "latchkey").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("  YubiKey 5  ").ok().as_deref(), Some("YubiKey 5"));
        assert!(check_name("").is_err());
        assert!(check_name("   ").is_err());
        assert!(check_name("a\u{7}b").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(check_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
    }
}
