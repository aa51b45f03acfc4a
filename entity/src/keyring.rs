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
    /// `ID:HASH:MAC` of the row that keyed the audit chain (MAC under the
    /// chain key), so that row cannot be removed and keyed anew.
    #[sea_orm(column_type = "Text")]
    pub audit_chain_mark: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
