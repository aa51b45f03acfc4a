//! `signing_keys`: the Ed25519 keys that sign JWTs for other services. The
//! private half is sealed by the keyring (never in plaintext at rest); the
//! public half is published in the JWKS. States: `active` (signs),
//! `previous` (still published until every token it signed has expired),
//! `retired`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261123_000002_app_role::APP_ROLE;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Id,
    KeyId,
    Ciphertext,
    PublicKey,
    State,
    CreatedAt,
    RetiredAt,
}

const STATE_INDEX: &str = "idx_signing_keys_state";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SigningKeys::Table)
                    .col(pk_uuid(SigningKeys::Id))
                    .col(uuid(SigningKeys::KeyId))
                    .col(text(SigningKeys::Ciphertext))
                    .col(string_len(SigningKeys::PublicKey, 64))
                    .col(string_len(SigningKeys::State, 16))
                    .col(timestamp_with_time_zone(SigningKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(SigningKeys::RetiredAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name(STATE_INDEX).table(SigningKeys::Table).col(SigningKeys::State).to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(&format!("GRANT SELECT, INSERT, UPDATE, DELETE ON signing_keys TO {APP_ROLE}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(STATE_INDEX).table(SigningKeys::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(SigningKeys::Table).to_owned()).await
    }
}
