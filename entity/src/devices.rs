//! `devices`: devices seen for a user; `id` is a keyed hash (hex).

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

    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
    #[sea_orm(has_many)]
    pub sessions: HasMany<super::sessions::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
