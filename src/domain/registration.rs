//! OPAQUE registration. The server evaluates the OPRF on the client's
//! blinded password and stores the client's upload (the "registration
//! record"), sealed by the keyring; it never sees the password.
//!
//! Start reserves nothing but leaves a short-lived marker, so a finish
//! without a start is refused; the username is claimed atomically at finish
//! (a unique constraint), so two racing registrations give one 201 and one
//! 409.

use std::time::Duration;

use chrono::{DateTime, Utc};
use opaque_ke::{RegistrationRequest, RegistrationUpload, ServerRegistration};
use uuid::Uuid;

use super::audit::events;
use super::core::{ClientInfo, Core};
use super::keyring::{Owner, SealedColumn};
use super::messages::{self, REGISTRATION_RECORD_LEN, REGISTRATION_REQUEST_LEN};
use super::opaque::Suite;
use super::ratelimit::Action;
use super::username::Username;
use super::{Error, Result};
use crate::store::{FastStore as _, users};

/// How long a started registration may take to finish (the client runs
/// Argon2id with 64 MiB in between).
const PENDING_TTL: Duration = Duration::from_secs(300);

impl Core {
    /// Answers the client's registration request with the OPRF evaluation.
    #[tracing::instrument(skip_all)]
    pub async fn registration_start(
        &self,
        username: &str,
        request: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let username = Username::parse(username)?;
        self.enforce(Action::Registration, client, Some(username.as_str())).await?;
        let bytes = messages::decode("registration_request", request, REGISTRATION_REQUEST_LEN)?;
        let request = RegistrationRequest::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::InvalidRequest("registration_request is not a valid group element".into()))?;
        // The OPRF key is per credential identifier, and login uses the
        // same one: evaluating a taken name's identifier here would let
        // anyone test passwords for that account offline against one KE2,
        // outside the lockout. A taken name is evaluated under a decoy
        // identifier instead (deterministic, so repeating a request shows
        // nothing), and its finish ends in 409.
        let taken = users::exists(&self.db, username.as_str()).await?;
        let identifier =
            if taken { self.decoy_identifier(username.as_str()) } else { username.as_str().as_bytes().to_vec() };
        let start = ServerRegistration::<Suite>::start(&self.setup, request, &identifier)
            .map_err(|_| Error::InvalidRequest("registration_request was refused".into()))?;
        // The marker binds finish to this start: one finish (GETDEL) within
        // the TTL, sealed under its own key so a fast-store writer cannot
        // plant one.
        let key = self.keys.registration(&self.name_hash(username.as_str()));
        // The end inside the seal: a marker re-planted after its TTL is refused.
        let until = (now + chrono::Duration::from_std(PENDING_TTL).unwrap_or_default()).timestamp_millis();
        self.fast.set(&key, &self.seal.seal(&key, &until.to_be_bytes()), PENDING_TTL).await?;
        Ok(messages::encode(&start.message.serialize()))
    }

    /// Stores the client's registration record; returns the new user id.
    #[tracing::instrument(skip_all)]
    pub async fn registration_finish(
        &self,
        username: &str,
        record: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Uuid> {
        let username = Username::parse(username)?;
        // Limited like start, so finish cannot be used to probe names.
        self.enforce(Action::Registration, client, Some(username.as_str())).await?;
        let bytes = messages::decode("registration_record", record, REGISTRATION_RECORD_LEN)?;
        let upload = RegistrationUpload::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::InvalidRequest("registration_record is malformed".into()))?;
        let key = self.keys.registration(&self.name_hash(username.as_str()));
        let started = self
            .fast
            .get_del(&key)
            .await?
            .and_then(|sealed| self.seal.open(&key, &sealed))
            .and_then(|plain| <[u8; 8]>::try_from(plain.as_slice()).ok())
            .is_some_and(|until| i64::from_be_bytes(until) > now.timestamp_millis());
        if !started {
            // The same answer whether or not the name exists: no oracle.
            return Err(Error::InvalidRequest("no registration was started for this username (or it expired)".into()));
        }
        let record = ServerRegistration::<Suite>::finish(upload).serialize();
        let user_id = Uuid::now_v7();
        let sealed = self.keyring.seal(SealedColumn::OpaqueRecord, Owner::User(user_id), &record, now).await?;
        let event = self.audit.event(events::REGISTRATION, client, now).user(user_id).build();
        users::register(&self.db, user_id, username.as_str(), (sealed.key_id, sealed.ciphertext), now, event)
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => Error::Conflict("username is taken".into()),
                other => other,
            })?;
        tracing::info!(user_id = %user_id, username = %username, "registered");
        Ok(user_id)
    }

    /// A registration identifier no login ever uses: a keyed hash of the
    /// name, so the OPRF answer for a taken name matches no account's key.
    fn decoy_identifier(&self, username: &str) -> Vec<u8> {
        use hmac::Mac as _;
        let key = self.keyring.subkey("registration-decoy");
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).expect("HMAC takes keys of any length");
        mac.update(username.as_bytes());
        let mut out = b"decoy:".to_vec();
        out.extend_from_slice(hex::encode(mac.finalize().into_bytes()).as_bytes());
        out
    }
}
