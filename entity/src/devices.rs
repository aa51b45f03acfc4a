//! `devices`: devices seen for a user. A device is known by the hash of its
//! `lk_d_` credential (`token_hash`); rows from before device credentials
//! have none.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "devices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "String(StringLen::N(64))")]
    pub id: String,
    #[sea_orm(indexed)]
    pub user_id: Uuid,
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub name: Option<String>,
    /// `unknown` by default.
    #[sea_orm(column_type = "String(StringLen::N(16))", default_value = "unknown")]
    pub trust: String,
    pub first_seen_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub last_ip: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(512))")]
    pub user_agent: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))", unique)]
    pub token_hash: Option<String>,
    /// Keyed hash of the fingerprint the client claimed (descriptive only).
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub fingerprint_hash: Option<String>,
    /// Consecutive failed logins from this device (counted only while trusted).
    pub failed_attempts: i32,
    pub last_failure_at: Option<DateTimeUtc>,
    pub locked_until: Option<DateTimeUtc>,

    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
    #[sea_orm(has_many)]
    pub sessions: HasMany<super::sessions::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
