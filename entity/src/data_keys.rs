//! `data_keys`: data-encryption keys wrapped by the master key.

use sea_orm::entity::prelude::*;

/// Values of [`Model::state`].
pub const STATE_ACTIVE: &str = "active";
/// Values of [`Model::state`].
pub const STATE_DECRYPT_ONLY: &str = "decrypt_only";
/// Values of [`Model::state`].
pub const STATE_RETIRED: &str = "retired";

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "data_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub wrapped_key: String,
    /// One of `active`, `decrypt_only`, `retired`.
    #[sea_orm(column_type = "String(StringLen::N(16))", indexed)]
    pub state: String,
    #[sea_orm(default_value = 0)]
    pub use_count: i64,
    pub created_at: DateTimeUtc,
    pub retired_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
