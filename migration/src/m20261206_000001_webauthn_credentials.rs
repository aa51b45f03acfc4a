//! `webauthn_credentials`: a user's passkeys (WebAuthn authenticators) as a
//! second factor. The credential (public key, counter, transports, backup
//! flags: webauthn-rs's `Passkey`, as JSON) is sealed by the keyring under
//! `key_id`, bound to its owner; `sign_count` is kept beside it in clear so
//! the store can refuse a counter that does not move forward with a
//! compare-and-set. `credential_id` (base64url) is unique over all users: a
//! credential belongs to one account.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261123_000002_app_role::APP_ROLE;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebauthnCredentials {
    Table,
    Id,
    UserId,
    CredentialId,
    Name,
    KeyId,
    Ciphertext,
    SignCount,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

const USER_INDEX: &str = "idx_webauthn_credentials_user_id";
const KEY_INDEX: &str = "idx_webauthn_credentials_key_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebauthnCredentials::Table)
                    .col(pk_uuid(WebauthnCredentials::Id))
                    .col(uuid(WebauthnCredentials::UserId))
                    .col(string_len_uniq(WebauthnCredentials::CredentialId, 1400))
                    .col(string_len(WebauthnCredentials::Name, 64))
                    .col(uuid(WebauthnCredentials::KeyId))
                    .col(text(WebauthnCredentials::Ciphertext))
                    .col(big_integer(WebauthnCredentials::SignCount))
                    .col(timestamp_with_time_zone(WebauthnCredentials::CreatedAt))
                    .col(timestamp_with_time_zone_null(WebauthnCredentials::LastUsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebauthnCredentials::Table, WebauthnCredentials::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [(USER_INDEX, WebauthnCredentials::UserId), (KEY_INDEX, WebauthnCredentials::KeyId)] {
            manager
                .create_index(Index::create().name(name).table(WebauthnCredentials::Table).col(column).to_owned())
                .await?;
        }
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON webauthn_credentials TO {APP_ROLE}"
                ))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [USER_INDEX, KEY_INDEX] {
            manager.drop_index(Index::drop().name(name).table(WebauthnCredentials::Table).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(WebauthnCredentials::Table).to_owned()).await
    }
}
