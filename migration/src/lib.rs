//! Schema migrations for latchkey. The same migrations run unchanged on
//! PostgreSQL and SQLite: they are written only with sea-query builders and the
//! portable `sea_orm_migration::schema` column helpers. Run them with the
//! `migration` binary (`DATABASE_URL=… cargo run -p migration -- up|down|status`)
//! or programmatically with `Migrator::up(&db, None)`.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
pub mod m20261123_000002_app_role;
mod m20261201_000001_device_credentials;
mod m20261201_000002_audit_chain_mark;
mod m20261201_000003_account_lifecycle;
mod m20261201_000004_signing_keys;
mod m20261206_000001_webauthn_credentials;
pub mod m20261206_000002_row_level_security;
mod m20261207_000001_device_token_lookup;

/// All latchkey migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_app_role::Migration),
            Box::new(m20261201_000001_device_credentials::Migration),
            Box::new(m20261201_000002_audit_chain_mark::Migration),
            Box::new(m20261201_000003_account_lifecycle::Migration),
            Box::new(m20261201_000004_signing_keys::Migration),
            Box::new(m20261206_000001_webauthn_credentials::Migration),
            Box::new(m20261206_000002_row_level_security::Migration),
            Box::new(m20261207_000001_device_token_lookup::Migration),
        ]
    }
}
