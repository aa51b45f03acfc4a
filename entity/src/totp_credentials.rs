//! `totp_credentials`: a user's TOTP secret, encrypted under the data key
//! `key_id`; at most one per user.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "totp_credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    #[sea_orm(indexed)]
    pub key_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub ciphertext: String,
    pub confirmed_at: Option<DateTimeUtc>,
    pub last_used_step: Option<i64>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,

    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
