//! The caller's devices.

use chrono::{DateTime, Utc};

use super::audit::events;
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
        self.session_cache.evict(&revoked).await;
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
        if trust == Trust::Blocked {
            return Err(Error::InvalidRequest("trust must be \"trusted\" or \"unknown\"".into()));
        }
        let device = devices::find(&self.db, device_id)
            .await?
            .filter(|d| d.user_id == current.user_id)
            .ok_or(Error::NotFound)?;
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
        if !devices::set_trust(&self.db, device_id, trust, true, &[event]).await? {
            return Err(Error::Forbidden);
        }
        Ok(())
    }
}
