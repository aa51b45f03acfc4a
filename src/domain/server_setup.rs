//! The OPAQUE server setup (OPRF seed and server key pair): generated once,
//! stored sealed by the keyring, shared by every replica, never regenerated.
//! Regenerating it would silently invalidate every registered password, so a
//! stored setup that cannot be read is a hard error, not a reason to make a
//! new one.

use chrono::{DateTime, Utc};

use super::keyring::{Keyring, Owner, Sealed, SealedColumn};
use super::opaque::ServerSetup;
use super::{Error, Result};
use crate::store::StoreError;
use crate::store::db::Db;
use crate::store::server_setup as store;

/// Loads the server setup, creating it on the first start.
pub async fn load_or_create(db: &Db, keyring: &Keyring, now: DateTime<Utc>) -> Result<ServerSetup> {
    if let Some(setup) = load(db, keyring).await? {
        return Ok(setup);
    }
    let setup = ServerSetup::new(&mut rand::rngs::OsRng);
    let sealed = keyring.seal(SealedColumn::ServerSetup, Owner::System, &setup.serialize(), now).await?;
    match store::insert(db, sealed.key_id, &sealed.ciphertext, now).await {
        Ok(()) => {
            tracing::info!("generated the OPAQUE server setup");
            Ok(setup)
        }
        // Another replica stored one first: use theirs, so all agree.
        Err(StoreError::Conflict(_)) => {
            load(db, keyring).await?.ok_or_else(|| Error::Internal("server setup vanished after a conflict".into()))
        }
        Err(e) => Err(e.into()),
    }
}

async fn load(db: &Db, keyring: &Keyring) -> Result<Option<ServerSetup>> {
    let Some((key_id, ciphertext)) = store::load(db).await? else {
        return Ok(None);
    };
    let bytes = keyring.open_sealed(SealedColumn::ServerSetup, Owner::System, &Sealed { key_id, ciphertext }).await?;
    ServerSetup::deserialize(&bytes)
        .map(Some)
        .map_err(|_| Error::Integrity("the stored OPAQUE server setup does not parse".into()))
}
