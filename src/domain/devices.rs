//! Devices and their credentials (SPEC §4 "Devices", OWASP "device
//! cookies"). A device is the holder of a server-issued `lk_d_` token,
//! handed out with the first session from it; only the token's hash is
//! stored. Trust and block belong to that credential: a login without it is
//! an unknown device whatever fingerprint or User-Agent it claims. The
//! fingerprint is descriptive (a keyed hash, to notice a credential used
//! from elsewhere: `device.mismatch`). A made-up or foreign token is
//! treated as none.

use chrono::{DateTime, Utc};
use hmac::Mac as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::audit::events;
use super::core::ClientInfo as Client;
use super::core::{ClientInfo, Core};
use super::sessions::CurrentSession;
use super::states::Trust;
use super::{Error, Result};
use crate::store::devices;
use crate::store::sessions as session_store;

/// Handed up to the HTTP layer as the store reads it.
pub use crate::store::devices::DeviceRecord;

impl Core {
    pub async fn list_devices(&self, current: &CurrentSession) -> Result<Vec<DeviceRecord>> {
        Ok(devices::list(&self.db, current.user_id).await?)
    }

    /// Forgets one of the caller's devices and revokes its sessions.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn remove_device(
        &self,
        current: &CurrentSession,
        device_id: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(current, now)?;
        let user_id = current.user_id;
        let removal = self.audit.event(events::DEVICE_REMOVE, client, now).user(user_id).device(device_id).build();
        let revocations = self.audit.revocations(user_id, Some(device_id), client, now);
        let removed = session_store::remove_device(&self.db, user_id, device_id, now, |ids| {
            let mut events = vec![removal];
            events.extend(revocations(ids));
            events
        })
        .await?;
        let Some(revoked) = removed else { return Err(Error::NotFound) };
        self.session_cache.revoked(&revoked).await;
        Ok(())
    }
}

impl Core {
    /// The user's own trust marking: `trusted` or `unknown`, never touching
    /// a block (only an admin blocks and unblocks).
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn set_own_device_trust(
        &self,
        current: &CurrentSession,
        device_id: &str,
        trust: Trust,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(current, now)?;
        if trust == Trust::Blocked {
            return Err(Error::InvalidRequest("trust must be \"trusted\" or \"unknown\"".into()));
        }
        let device = devices::find(&self.db, current.user_id, device_id).await?.ok_or(Error::NotFound)?;
        if device.trust == Trust::Blocked {
            return Err(Error::Forbidden);
        }
        let event = self
            .audit
            .event(events::DEVICE_TRUST, client, now)
            .user(current.user_id)
            .session(current.session_id)
            .device(device_id)
            .sealed(serde_json::json!({"from": device.trust, "to": trust, "by": "user"}))
            .await?;
        if !devices::set_trust(&self.db, current.user_id, device_id, trust, true, &[event]).await? {
            return Err(Error::Forbidden);
        }
        Ok(())
    }
}

/// The device a login is for, decided at login/finish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DevicePlan {
    /// The device whose credential the client presented.
    Known { id: String, name: Option<String> },
    /// A device seen for the first time: a credential is issued with the
    /// session.
    New { name: Option<String>, fingerprint_hash: String },
}

impl Core {
    /// A keyed hash of the fingerprint a client claims, unlinkable across
    /// users (raw fingerprints are never stored).
    pub(super) fn fingerprint_hash(&self, user_id: Uuid, fingerprint: &str) -> String {
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.device_key)
            .expect("HMAC takes keys of any length");
        mac.update(user_id.as_bytes());
        mac.update(fingerprint.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The plan for a login's device: the recognized one (auditing a
    /// credential presented with another fingerprint than recorded), or a
    /// new one.
    pub(super) async fn plan_device(
        &self,
        user_id: Uuid,
        known: Option<DeviceRecord>,
        fingerprint: &str,
        name: Option<String>,
        client: &Client,
        now: DateTime<Utc>,
    ) -> Result<DevicePlan> {
        let fingerprint_hash = self.fingerprint_hash(user_id, fingerprint);
        let Some(device) = known else { return Ok(DevicePlan::New { name, fingerprint_hash }) };
        if device.fingerprint_hash.as_deref().is_some_and(|recorded| recorded != fingerprint_hash) {
            self.audit
                .event(events::DEVICE_MISMATCH, client, now)
                .outcome(super::audit::FAILURE)
                .user(user_id)
                .device(&device.id)
                .append()
                .await?;
        }
        Ok(DevicePlan::Known { id: device.id, name })
    }
}
