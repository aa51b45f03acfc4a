//! `audit_events`: the hash-chained audit log. `user_id` deliberately has no
//! foreign key, so events outlive the users they mention.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub occurred_at: DateTimeUtc,
    #[sea_orm(column_type = "String(StringLen::N(64))", indexed)]
    pub event: String,
    #[sea_orm(indexed)]
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub device_id: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub ip: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub outcome: String,
    #[sea_orm(indexed)]
    pub details_key_id: Option<Uuid>,
    #[sea_orm(column_type = "Text")]
    pub details: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub prev_hash: String,
    #[sea_orm(column_type = "String(StringLen::N(64))", unique)]
    pub hash: String,
}

impl ActiveModelBehavior for ActiveModel {}
