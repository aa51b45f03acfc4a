//! The single row holding the sealed OPAQUE server setup.

use chrono::{DateTime, Utc};
use entity::server_setup;
use sea_orm::{ActiveValue::Set, EntityTrait};
use uuid::Uuid;

use super::StoreError;
use super::db::Db;

const ROW: i32 = 1;

/// The sealed setup: (key id, ciphertext).
pub async fn load(db: &Db) -> Result<Option<(Uuid, String)>, StoreError> {
    Ok(server_setup::Entity::find_by_id(ROW).one(db.conn()).await?.map(|m| (m.key_id, m.ciphertext)))
}

/// Stores the setup; [`StoreError::Conflict`] if one exists already.
pub async fn insert(db: &Db, key_id: Uuid, ciphertext: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    server_setup::Entity::insert(server_setup::ActiveModel {
        id: Set(ROW),
        key_id: Set(key_id),
        ciphertext: Set(ciphertext.to_owned()),
        created_at: Set(now),
    })
    .exec_without_returning(db.conn())
    .await?;
    Ok(())
}
