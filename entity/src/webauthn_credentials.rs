//! `webauthn_credentials`: a user's passkeys. The credential itself (a
//! webauthn-rs `Passkey` as JSON) is sealed under the data key `key_id`;
//! `sign_count` mirrors its counter for a compare-and-set.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webauthn_credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(indexed)]
    pub user_id: Uuid,
    /// base64url of the WebAuthn credential id; unique over all users.
    #[sea_orm(column_type = "String(StringLen::N(1400))", unique)]
    pub credential_id: String,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub name: String,
    #[sea_orm(indexed)]
    pub key_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub ciphertext: String,
    pub sign_count: i64,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,

    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
