//! `keyring`: the single (id = 1) row describing how the master key is
//! derived, plus a canary to check it.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "keyring")]
pub struct Model {
    /// Always 1.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub kdf: String,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub kdf_salt: String,
    pub kdf_iterations: i32,
    #[sea_orm(column_type = "Text")]
    pub canary: String,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
