//! `signing_keys`: Ed25519 JWT signing keys; the private half sealed by the
//! keyring, the public half published in the JWKS.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    /// Also the JWS `kid`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The keyring data key sealing `ciphertext`.
    pub key_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub ciphertext: String,
    /// base64url of the 32-byte public key (the JWK `x`).
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub public_key: String,
    /// `active`, `previous` or `retired`.
    #[sea_orm(column_type = "String(StringLen::N(16))", indexed)]
    pub state: String,
    pub created_at: DateTimeUtc,
    pub retired_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
