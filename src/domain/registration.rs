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
    pub async fn registration_start(&self, username: &str, request: &str, client: &ClientInfo) -> Result<String> {
        let username = Username::parse(username)?;
        self.enforce(Action::Registration, client, Some(username.as_str())).await?;
        let bytes = messages::decode("registration_request", request, REGISTRATION_REQUEST_LEN)?;
        let request = RegistrationRequest::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::InvalidRequest("registration_request is not a valid group element".into()))?;
        let start = ServerRegistration::<Suite>::start(&self.setup, request, username.as_str().as_bytes())
            .map_err(|_| Error::InvalidRequest("registration_request was refused".into()))?;
        self.fast.set(&self.keys.registration(&super::tokens::hash(username.as_str())), b"1", PENDING_TTL).await?;
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
        let bytes = messages::decode("registration_record", record, REGISTRATION_RECORD_LEN)?;
        let upload = RegistrationUpload::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::InvalidRequest("registration_record is malformed".into()))?;
        if self.fast.get_del(&self.keys.registration(&super::tokens::hash(username.as_str()))).await?.is_none() {
            if users::exists(&self.db, username.as_str()).await? {
                return Err(Error::Conflict("username is taken".into()));
            }
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
}
