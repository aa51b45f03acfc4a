//! TOTP (RFC 6238) as a second factor, with recovery codes.
//!
//! ```text
//!   enroll ---> pending secret (sealed) --confirm(code)--> on (+10 recovery codes, session -> aal2)
//!                  ^  re-enroll replaces                      |  disable(aal2 session, code)
//!                  `------------------------------------------'
//!
//!   login/finish (password ok, TOTP on) --> mfa token (lk_m_, 5 min)
//!   login/totp (mfa token, code | recovery code) --> new aal2 session
//!                 5 wrong codes burn the mfa token
//! ```
//!
//! Codes: HMAC-SHA1, 6 digits, 30-second steps, one step of skew either
//! way, by the server's clock only. Each step is accepted at most once per
//! user and never one older than the last accepted: the store records the
//! step with a compare-and-set, which holds under concurrent requests and
//! across replicas. Every function here takes the time as a parameter.
//!
//! Recovery codes are stored as HMAC-SHA256, under the keyring subkey
//! `recovery-code`, of (user id, normalized code): a leaked
//! `recovery_codes` table cannot be searched for every user's codes at
//! once, and a row copied to another user matches nothing. Rows written by
//! earlier versions hold a plain SHA-256 of the code; they migrate on use: a
//! code that matches no HMAC is also tried in that form, accepted once, and
//! its row rewritten to the HMAC as it is spent. Legacy rows are thus spent,
//! or replaced when TOTP is re-enrolled, or removed when it is turned off;
//! nobody has to re-issue codes.
//!
//! Secrets in memory: the decrypted TOTP secret and the one generated at
//! enrolment are `Zeroizing`, and `totp-rs` (its `zeroize` feature) wipes
//! its own copies.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit::{self, events};
use super::core::{ClientInfo, Core};
use super::devices::DevicePlan;
use super::keyring::{Owner, Sealed, SealedColumn};
use super::lockout::Scope;
use super::ratelimit::Action;
use super::sessions::{Authenticated, CurrentSession, IssuedSession};
use super::states::{Aal, Trust};
use super::tokens::{self, TokenKind};
use super::{Error, Result};
use crate::store::FastStore as _;
use crate::store::totp as store;

pub use totp_rs::Algorithm;

pub const ISSUER: &str = "latchkey";
pub const STEP_SECS: u64 = 30;
pub const DIGITS: u8 = 6;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: u64 = 1;
/// 160 bits, RFC 4226's recommendation.
pub const SECRET_BYTES: usize = 20;
pub const RECOVERY_CODES: usize = 10;
pub const MFA_TOKEN_TTL: Duration = Duration::from_secs(300);
pub const MAX_MFA_ATTEMPTS: u8 = 5;

/// The code of `secret` at `unix_time` (any RFC 6238 parameters, so the
/// RFC's own vectors run through this function).
pub fn code_at(algorithm: Algorithm, digits: u8, step_secs: u64, secret: &[u8], unix_time: u64) -> String {
    totp_rs::Builder::new()
        .with_algorithm(algorithm)
        .with_digits(digits)
        .with_step_duration(step_secs)
        .with_secret(secret.to_vec())
        .build_noncompliant()
        .generate(unix_time)
        .to_string()
}

/// The time step within the skew window whose code is `code`, oldest
/// first. Comparisons are constant-time.
pub fn matching_step(secret: &[u8], code: &str, now: DateTime<Utc>) -> Option<u64> {
    let now_step = u64::try_from(now.timestamp()).ok()? / STEP_SECS;
    let mut found = None;
    for step in now_step.saturating_sub(SKEW_STEPS)..=now_step + SKEW_STEPS {
        let expected = code_at(Algorithm::SHA1, DIGITS, STEP_SECS, secret, step * STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

fn check_code_format(code: &str) -> Result<()> {
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidRequest(format!("code must be {DIGITS} digits")));
    }
    Ok(())
}

/// Recovery codes: 50 random bits as `xxxxx-xxxxx` (base32, no ambiguous
/// characters lost to case). Stored as [`recovery_code_mac`].
fn new_recovery_code() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// Lower case, without the dashes and spaces people type or paste.
fn normalize_recovery_code(code: &str) -> Zeroizing<String> {
    Zeroizing::new(code.chars().filter(|c| !matches!(c, '-' | ' ')).flat_map(char::to_lowercase).collect())
}

/// What a recovery code row stores: hex HMAC-SHA256 under `key` (the
/// `recovery-code` subkey) of the user id's 16 bytes followed by the
/// normalized code.
fn recovery_code_mac(key: &[u8], user_id: Uuid, code: &str) -> String {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(user_id.as_bytes());
    mac.update(normalize_recovery_code(code).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The unkeyed SHA-256 that rows written by earlier versions hold; only
/// looked up, never written.
fn legacy_recovery_code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(normalize_recovery_code(code).as_bytes()))
}

/// What enrolment hands the user once.
pub struct Enrollment {
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_png_base64: String,
}

/// The second-factor input at login.
pub enum SecondFactor {
    Code(String),
    RecoveryCode(String),
    /// A passkey's answer to the challenge of `/v1/login/webauthn/start`.
    Webauthn(Box<super::webauthn::PublicKeyCredential>),
}

/// Between a correct password and the second factor (sealed in the fast
/// store: it names the device the session will be for).
#[derive(Serialize, Deserialize)]
pub(super) struct PendingMfa {
    pub(super) login: Authenticated,
    attempts: u8,
    pub(super) expires_at: DateTime<Utc>,
}

impl Core {
    async fn put_back(&self, key: &str, pending: &PendingMfa, now: DateTime<Utc>) -> Result<()> {
        if let (Ok(ttl), Ok(bytes)) = ((pending.expires_at - now).to_std(), serde_json::to_vec(pending)) {
            self.fast.set(key, &self.seal.seal(key, &bytes), ttl).await?;
        }
        Ok(())
    }

    /// Starts (or restarts) enrolment: a new secret, pending until confirmed.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn totp_enroll(&self, current: &CurrentSession, now: DateTime<Utc>) -> Result<Enrollment> {
        self.require_recent_auth(current, now)?;
        // A user with a passkey adds TOTP only from a session that proved
        // it: confirming makes the session aal2.
        self.require_aal2_if_second_factor(current).await?;
        let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret_base32 = totp_rs::Secret::from(secret.to_vec()).to_base32();
        let sealed = self.keyring.seal(SealedColumn::TotpSecret, Owner::User(current.user_id), &secret, now).await?;
        if !store::put_pending(&self.db, current.user_id, (sealed.key_id, sealed.ciphertext), now).await? {
            return Err(Error::Conflict("TOTP is already on; disable it first".into()));
        }
        // The label may not hold a colon (it separates issuer and account).
        let account = current.username.replace(':', "_");
        let totp = totp_rs::Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_step_duration(STEP_SECS)
            .with_secret(secret.to_vec())
            .with_issuer(Some(ISSUER))
            .with_account_name(account)
            .build()
            .map_err(|e| Error::Internal(format!("TOTP parameters refused: {e}")))?;
        let otpauth_uri = totp.to_url().map_err(|e| Error::Internal(format!("otpauth URI: {e}")))?;
        let qr_png = totp.to_qr_png().map_err(|e| Error::Internal(format!("QR code: {e}")))?;
        Ok(Enrollment {
            secret_base32,
            otpauth_uri,
            qr_png_base64: base64::engine::general_purpose::STANDARD.encode(qr_png),
        })
    }

    async fn totp_secret(&self, user_id: Uuid, record: &store::TotpRecord) -> Result<Zeroizing<Vec<u8>>> {
        self.keyring
            .open_sealed(
                SealedColumn::TotpSecret,
                Owner::User(user_id),
                &Sealed { key_id: record.key_id, ciphertext: record.ciphertext.clone() },
            )
            .await
    }

    /// Confirms enrolment with a first code: TOTP is on, the session becomes
    /// aal2, and the recovery codes are returned (only this once).
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn totp_confirm(
        &self,
        current: &CurrentSession,
        code: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        self.require_recent_auth(current, now)?;
        self.require_aal2_if_second_factor(current).await?;
        check_code_format(code)?;
        let record = store::find(&self.db, current.user_id).await?;
        let Some(record) = record else {
            return Err(Error::InvalidRequest("no TOTP enrolment to confirm; enroll first".into()));
        };
        if record.confirmed_at.is_some() {
            return Err(Error::Conflict("TOTP is already on".into()));
        }
        let secret = self.totp_secret(current.user_id, &record).await?;
        let step = matching_step(&secret, code, now)
            .ok_or_else(|| Error::InvalidRequest("the code does not match the enrolled secret".into()))?;
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        let hashes: Vec<String> =
            codes.iter().map(|c| recovery_code_mac(&self.recovery_key, current.user_id, c)).collect();
        let event = self
            .audit
            .event(events::TOTP_ENROLL, client, now)
            .user(current.user_id)
            .session(current.session_id)
            .device_opt(current.device_id.as_deref())
            .build();
        let step = i64::try_from(step).map_err(|_| Error::Internal("time step out of range".into()))?;
        if !store::confirm(&self.db, current.user_id, &record, step, &hashes, current.session_id, now, &[event]).await?
        {
            return Err(Error::InvalidRequest("that code was used already; wait for the next one".into()));
        }
        // The cached copy still says aal1.
        self.session_cache.evict(&[(current.session_id, current.token_hash.clone())]).await;
        Ok(codes)
    }

    /// Spends one of the user's recovery codes; `false` if it is unknown or
    /// used. A legacy (plain SHA-256) row is accepted too, and rewritten to
    /// the HMAC as it is spent.
    async fn use_recovery_code(&self, user_id: Uuid, code: &str, now: DateTime<Utc>) -> Result<bool> {
        let mac = recovery_code_mac(&self.recovery_key, user_id, code);
        let legacy = legacy_recovery_code_hash(code);
        Ok(store::use_recovery_code(&self.db, user_id, &mac, &legacy, now).await?)
    }

    /// Verifies a code for a user with TOTP on, consuming its step.
    async fn verify_totp(&self, user_id: Uuid, code: &str, now: DateTime<Utc>) -> Result<bool> {
        let Some(record) = store::find(&self.db, user_id).await?.filter(|r| r.confirmed_at.is_some()) else {
            return Ok(false);
        };
        let secret = self.totp_secret(user_id, &record).await?;
        let Some(step) = matching_step(&secret, code, now) else { return Ok(false) };
        let step = i64::try_from(step).map_err(|_| Error::Internal("time step out of range".into()))?;
        Ok(store::consume_step(&self.db, user_id, step, now).await?)
    }

    /// Turns TOTP off. Needs an aal2 session and a current code.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn totp_disable(
        &self,
        current: &CurrentSession,
        code: &str,
        revoke_other_sessions: bool,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        self.require_recent_auth(current, now)?;
        check_code_format(code)?;
        if current.aal < Aal::Aal2 {
            return Err(Error::Forbidden);
        }
        if !self.verify_totp(current.user_id, code, now).await? {
            let scope = Scope::Account(current.user_id);
            self.second_factor_failed(&scope, current.user_id, Some(current.session_id), client, now).await?;
            return Err(Error::InvalidCredentials);
        }
        let event = self
            .audit
            .event(events::TOTP_DISABLE, client, now)
            .user(current.user_id)
            .session(current.session_id)
            .device_opt(current.device_id.as_deref())
            .build();
        store::disable(&self.db, current.user_id, &[event]).await?;
        if revoke_other_sessions { self.revoke_other_sessions(current, client, now).await } else { Ok(0) }
    }

    /// A bad code: one more failure in `scope`, audited.
    pub(super) async fn second_factor_failed(
        &self,
        scope: &Scope,
        user_id: Uuid,
        session_id: Option<Uuid>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.attempt_failed(scope, client, now).await?;
        let event = self
            .audit
            .event(events::MFA_FAILURE, client, now)
            .outcome(audit::FAILURE)
            .user(user_id)
            .session_opt(session_id)
            .build();
        self.audit.append(&[event]).await?;
        Ok(())
    }

    /// After a correct password for a user with TOTP on: an MFA token that
    /// only `/v1/login/totp` accepts.
    pub(super) async fn start_mfa(&self, login: Authenticated, now: DateTime<Utc>) -> Result<(String, DateTime<Utc>)> {
        let token = tokens::generate(TokenKind::Mfa);
        let expires_at = now + chrono::Duration::from_std(MFA_TOKEN_TTL).unwrap_or_default();
        let pending = PendingMfa { login, attempts: 0, expires_at };
        self.put_back(&self.keys.mfa(&token.hash), &pending, now).await?;
        Ok((token.value, expires_at))
    }

    /// The pending second factor of an MFA token, left in place; with the
    /// token's hash. `InvalidCredentials` for an unknown or expired token.
    pub(super) async fn peek_mfa(&self, mfa_token: &str, now: DateTime<Utc>) -> Result<(String, PendingMfa)> {
        let hash = tokens::verify_shape(TokenKind::Mfa, mfa_token).ok_or(Error::InvalidCredentials)?;
        let key = self.keys.mfa(&hash);
        let stored = self.fast.get(&key).await?;
        let opened = stored.as_deref().and_then(|sealed| self.seal.open(&key, sealed));
        opened
            .as_deref()
            .and_then(|plain| serde_json::from_slice::<PendingMfa>(plain).ok())
            .filter(|pending| pending.expires_at > now)
            .map(|pending| (hash, pending))
            .ok_or(Error::InvalidCredentials)
    }

    /// The second step of a login with a second factor on (a TOTP code, a
    /// recovery code or a passkey's assertion): a new aal2 session.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn login_totp(
        &self,
        mfa_token: &str,
        factor: SecondFactor,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<IssuedSession> {
        if let SecondFactor::Code(code) = &factor {
            check_code_format(code)?;
        }
        let hash = tokens::verify_shape(TokenKind::Mfa, mfa_token).ok_or(Error::InvalidCredentials)?;
        let key = self.keys.mfa(&hash);
        // Taken out while this attempt runs: concurrent attempts with one
        // token find nothing, so at most one of them can succeed.
        let stored = self.fast.get_del(&key).await?;
        let opened = stored.as_deref().and_then(|sealed| self.seal.open(&key, sealed));
        let Some(mut pending) = opened.as_deref().and_then(|plain| serde_json::from_slice::<PendingMfa>(plain).ok())
        else {
            return Err(Error::InvalidCredentials);
        };
        if pending.expires_at <= now {
            return Err(Error::InvalidCredentials);
        }
        if let Err(limited) = self.enforce(Action::Totp, client, Some(&pending.login.username)).await {
            // Not an attempt: the token stays usable after the wait.
            self.put_back(&key, &pending, now).await?;
            return Err(limited);
        }
        let user_id = pending.login.user_id;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        self.second_factor_admitted(&pending.login.scope, now).await?;
        let (ok, used_recovery) = match &factor {
            SecondFactor::Code(code) => (self.verify_totp(user_id, code, now).await?, false),
            SecondFactor::RecoveryCode(code) => (self.use_recovery_code(user_id, code, now).await?, true),
            SecondFactor::Webauthn(credential) => {
                let state_key = self.keys.tagged_part("mfa", &hash, "webauthn");
                (self.verify_assertion(user_id, &state_key, credential, client, now).await?, false)
            }
        };
        if !ok {
            self.second_factor_failed(&pending.login.scope, user_id, None, client, now).await?;
            pending.attempts += 1;
            if pending.attempts < MAX_MFA_ATTEMPTS {
                self.put_back(&key, &pending, now).await?;
            } else {
                tracing::warn!(user_id = %user_id, "MFA token burned after {MAX_MFA_ATTEMPTS} wrong codes");
            }
            return Err(Error::InvalidCredentials);
        }
        if let DevicePlan::Known { id, .. } = &pending.login.device
            && crate::store::devices::find(&self.db, user_id, id).await?.is_some_and(|d| d.trust == Trust::Blocked)
        {
            return Err(Error::DeviceBlocked);
        }
        let mut extra = vec![self.audit.event(events::MFA_SUCCESS, client, now).user(user_id).build()];
        if used_recovery {
            let left = store::recovery_codes_left(&self.db, user_id).await?;
            extra.push(
                self.audit
                    .event(events::RECOVERY_CODE_USED, client, now)
                    .user(user_id)
                    .sealed(serde_json::json!({ "remaining": left }))
                    .await?,
            );
        }
        self.issue_session(Authenticated { aal: Aal::Aal2, ..pending.login }, extra, client, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).expect("valid time")
    }

    #[test]
    fn window_is_one_step_each_way() {
        let secret = b"12345678901234567890";
        let now = at(1_700_000_000);
        let step = 1_700_000_000 / 30;
        for (offset, expected) in [(-1i64, Some(step - 1)), (0, Some(step)), (1, Some(step + 1))] {
            let t = u64::try_from(1_700_000_000 + offset * 30).expect("positive");
            let code = code_at(Algorithm::SHA1, 6, 30, secret, t);
            assert_eq!(matching_step(secret, &code, now), expected, "offset {offset}");
        }
        for offset in [-2i64, 2] {
            let t = u64::try_from(1_700_000_000 + offset * 30).expect("positive");
            let code = code_at(Algorithm::SHA1, 6, 30, secret, t);
            assert_eq!(matching_step(secret, &code, now), None, "offset {offset} is outside the window");
        }
        assert_eq!(matching_step(secret, "000000x", now), None);
    }

    #[test]
    fn recovery_codes_normalize() {
        let key = [7u8; 32];
        let user = Uuid::from_u128(1);
        let code = new_recovery_code();
        assert_eq!(code.len(), 11);
        assert_eq!(*normalize_recovery_code(&code), code.replace('-', ""));
        assert_eq!(*normalize_recovery_code(" AbCdE-fGhIj "), "abcdefghij");
        let typed = code.to_uppercase().replace('-', " ");
        assert_eq!(recovery_code_mac(&key, user, &code), recovery_code_mac(&key, user, &typed));
        assert_eq!(legacy_recovery_code_hash(&code), legacy_recovery_code_hash(&typed));
        assert_ne!(recovery_code_mac(&key, user, &code), recovery_code_mac(&key, user, &new_recovery_code()));
    }

    #[test]
    fn recovery_code_mac_is_keyed_and_per_user() {
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let code = "abcde-fghij";
        let mac = recovery_code_mac(&[7u8; 32], alice, code);
        assert_eq!(mac.len(), 64, "fits the 64-character column");
        assert_ne!(mac, recovery_code_mac(&[7u8; 32], bob, code), "another user");
        assert_ne!(mac, recovery_code_mac(&[8u8; 32], alice, code), "another key");
        assert_ne!(mac, legacy_recovery_code_hash(code));
        assert_eq!(legacy_recovery_code_hash(code), hex::encode(Sha256::digest(b"abcdefghij")));
    }
}
