//! Account lifecycle: `sessions.auth_time` (the last primary
//! authentication; a refresh keeps it, step-up and gateways read it) and
//! `reset_tokens` (single-use `lk_t_` tokens an admin issues; only their
//! hash is stored). Sessions from before this keep `auth_time` empty, read
//! as their creation time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261123_000002_app_role::APP_ROLE;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    AuthTime,
}

#[derive(DeriveIden)]
enum ResetTokens {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

const USER_INDEX: &str = "idx_reset_tokens_user_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(ColumnDef::new(Sessions::AuthTime).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ResetTokens::Table)
                    .col(pk_uuid(ResetTokens::Id))
                    .col(uuid(ResetTokens::UserId))
                    .col(string_len_uniq(ResetTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(ResetTokens::CreatedAt))
                    .col(timestamp_with_time_zone(ResetTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ResetTokens::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ResetTokens::Table, ResetTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name(USER_INDEX).table(ResetTokens::Table).col(ResetTokens::UserId).to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(&format!("GRANT SELECT, INSERT, UPDATE, DELETE ON reset_tokens TO {APP_ROLE}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(USER_INDEX).table(ResetTokens::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ResetTokens::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Sessions::Table).drop_column(Sessions::AuthTime).to_owned()).await
    }
}
