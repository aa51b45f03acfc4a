//! Devices get a token lookup like sessions and refresh tokens have
//! (Postgres row-level security): SELECT of the device whose credential
//! hash is `latchkey.token_hash`, so login/start reads the user, its OPAQUE
//! record and the presented device in one transaction, before the user id
//! is known. Nothing to do on SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261206_000002_row_level_security::{TOKEN_SETTING, allow, setting};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let conn = manager.get_connection();
        allow(conn, "devices", "token", "SELECT", &format!("token_hash = {}", setting(TOKEN_SETTING))).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared("DROP POLICY IF EXISTS devices_token ON devices").await?;
        Ok(())
    }
}
