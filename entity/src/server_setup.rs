//! `server_setup`: the single (id = 1) row holding the OPAQUE server setup,
//! encrypted under the data key `key_id`.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "server_setup")]
pub struct Model {
    /// Always 1.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    #[sea_orm(indexed)]
    pub key_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub ciphertext: String,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
