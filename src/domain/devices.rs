//! The caller's devices.

use chrono::{DateTime, Utc};

use super::audit::{self, events};
use super::core::{ClientInfo, Core};
use super::sessions::CurrentSession;
use super::{Error, Result};
use crate::store::devices::{self, DeviceRecord};
use crate::store::sessions as session_store;

impl Core {
    pub async fn list_devices(&self, current: &CurrentSession) -> Result<Vec<DeviceRecord>> {
        Ok(devices::list(&self.db, current.user_id).await?)
    }

    /// Forgets one of the caller's devices and revokes its sessions.
    pub async fn remove_device(
        &self,
        current: &CurrentSession,
        device_id: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let user_id = current.user_id;
        let removed = session_store::remove_device(&self.db, user_id, device_id, now, |ids| {
            let mut events = vec![self.audit_event(
                events::DEVICE_REMOVE,
                audit::SUCCESS,
                Some(user_id),
                None,
                Some(device_id),
                client,
                now,
            )];
            events.extend(ids.iter().map(|id| {
                self.audit_event(
                    events::SESSION_REVOKE,
                    audit::SUCCESS,
                    Some(user_id),
                    Some(*id),
                    Some(device_id),
                    client,
                    now,
                )
            }));
            events
        })
        .await?;
        let Some(revoked) = removed else { return Err(Error::NotFound) };
        self.evict(&revoked).await;
        Ok(())
    }
}

impl Core {
    /// The user's own trust marking: `trusted` or `unknown`, never touching
    /// a block (only an admin blocks and unblocks).
    pub async fn set_own_device_trust(
        &self,
        current: &CurrentSession,
        device_id: &str,
        trust: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !matches!(trust, "trusted" | "unknown") {
            return Err(Error::InvalidRequest("trust must be \"trusted\" or \"unknown\"".into()));
        }
        let device = devices::find(&self.db, device_id)
            .await?
            .filter(|d| d.user_id == current.user_id)
            .ok_or(Error::NotFound)?;
        if device.trust == "blocked" {
            return Err(Error::Forbidden);
        }
        let event = self.audit_event(
            events::DEVICE_TRUST,
            audit::SUCCESS,
            Some(current.user_id),
            Some(current.session_id),
            Some(device_id),
            client,
            now,
        );
        let event =
            self.with_details(event, serde_json::json!({"from": device.trust, "to": trust, "by": "user"}), now).await?;
        if !devices::set_trust(&self.db, device_id, trust, true, &[event]).await? {
            return Err(Error::Forbidden);
        }
        Ok(())
    }
}
