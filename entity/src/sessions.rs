//! `sessions`: a login session; only the hash of its access token is stored.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(indexed)]
    pub user_id: Uuid,
    #[sea_orm(column_type = "String(StringLen::N(64))", indexed)]
    pub device_id: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))", unique)]
    pub token_hash: String,
    #[sea_orm(column_type = "String(StringLen::N(8))")]
    pub aal: String,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub ip: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(512))")]
    pub user_agent: Option<String>,
    pub created_at: DateTimeUtc,
    /// The last primary authentication (empty: `created_at`).
    pub auth_time: Option<DateTimeUtc>,
    pub last_seen_at: DateTimeUtc,
    pub token_expires_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub revoked_reason: Option<String>,

    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
    #[sea_orm(belongs_to, from = "device_id", to = "id", on_delete = "SetNull")]
    pub device: BelongsTo<Option<super::devices::Entity>>,
    #[sea_orm(has_many)]
    pub refresh_tokens: HasMany<super::refresh_tokens::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
