//! `users`: one row per account; lockout state lives here.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Already normalized.
    #[sea_orm(column_type = "String(StringLen::N(64))", unique)]
    pub username: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub locked_until: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub lock_reason: Option<String>,
    #[sea_orm(default_value = 0)]
    pub failed_attempts: i32,
    pub last_failure_at: Option<DateTimeUtc>,

    #[sea_orm(has_many)]
    pub roles: HasMany<super::user_roles::Entity>,
    #[sea_orm(has_one)]
    pub opaque_credential: HasOne<super::opaque_credentials::Entity>,
    #[sea_orm(has_one)]
    pub totp_credential: HasOne<super::totp_credentials::Entity>,
    #[sea_orm(has_many)]
    pub recovery_codes: HasMany<super::recovery_codes::Entity>,
    #[sea_orm(has_many)]
    pub devices: HasMany<super::devices::Entity>,
    #[sea_orm(has_many)]
    pub sessions: HasMany<super::sessions::Entity>,
    #[sea_orm(has_many)]
    pub reset_tokens: HasMany<super::reset_tokens::Entity>,
    #[sea_orm(has_many)]
    pub webauthn_credentials: HasMany<super::webauthn_credentials::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
