//! The least-privilege application role on Postgres (skipped on SQLite).
//!
//! `latchkey_app` (NOLOGIN) may read and write every table except the audit
//! log, which it may only read and append to: it cannot UPDATE or DELETE
//! audit rows. Operators create a login role in it
//! (`CREATE ROLE latchkey LOGIN PASSWORD '…' IN ROLE latchkey_app`), run
//! migrations as the schema owner, and run the service as that login role.
//! Roles are cluster-wide, so the role is created only if missing and never
//! dropped by `down`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

pub const APP_ROLE: &str = "latchkey_app";

const READ_WRITE: &[&str] = &[
    "users",
    "user_roles",
    "opaque_credentials",
    "totp_credentials",
    "recovery_codes",
    "devices",
    "sessions",
    "refresh_tokens",
    "keyring",
    "data_keys",
    "server_setup",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        // Concurrent migrations of two databases may race to create it.
        db.execute_unprepared(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                 CREATE ROLE {APP_ROLE} NOLOGIN;
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        ))
        .await?;
        db.execute_unprepared(&format!("GRANT USAGE ON SCHEMA public TO {APP_ROLE}")).await?;
        db.execute_unprepared(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {APP_ROLE}",
            READ_WRITE.join(", ")
        ))
        .await?;
        db.execute_unprepared(&format!("GRANT SELECT, INSERT ON audit_events TO {APP_ROLE}")).await?;
        db.execute_unprepared(&format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")).await?;
        db.execute_unprepared(&format!("GRANT SELECT ON seaql_migrations TO {APP_ROLE}")).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        let mut tables: Vec<&str> = READ_WRITE.to_vec();
        tables.extend(["audit_events", "seaql_migrations"]);
        db.execute_unprepared(&format!("REVOKE ALL ON {} FROM {APP_ROLE}", tables.join(", "))).await?;
        db.execute_unprepared(&format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {APP_ROLE}")).await?;
        db.execute_unprepared(&format!("REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}")).await?;
        Ok(())
    }
}
