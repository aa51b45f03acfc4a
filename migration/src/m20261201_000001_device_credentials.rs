//! Device credentials (SPEC §4 "Devices"): a device is identified by the
//! hash of a server-issued `lk_d_` token, not by what the client claims.
//! Adds the token hash (unique), a keyed hash of the claimed fingerprint
//! (descriptive: a mismatch is audited), and the device's own failure
//! counter and lock (a trusted device's failures lock only it). Devices
//! recorded before this have no token: they stay listed, and no login
//! matches them again.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Devices {
    Table,
    TokenHash,
    FingerprintHash,
    FailedAttempts,
    LastFailureAt,
    LockedUntil,
}

const TOKEN_INDEX: &str = "uq_devices_token_hash";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        let columns = [
            ColumnDef::new(Devices::TokenHash).string_len(64).null().to_owned(),
            ColumnDef::new(Devices::FingerprintHash).string_len(64).null().to_owned(),
            ColumnDef::new(Devices::FailedAttempts).integer().not_null().default(0).to_owned(),
            ColumnDef::new(Devices::LastFailureAt).timestamp_with_time_zone().null().to_owned(),
            ColumnDef::new(Devices::LockedUntil).timestamp_with_time_zone().null().to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(Devices::Table).add_column(&mut column).to_owned()).await?;
        }
        manager
            .create_index(
                Index::create().name(TOKEN_INDEX).table(Devices::Table).col(Devices::TokenHash).unique().to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(TOKEN_INDEX).table(Devices::Table).to_owned()).await?;
        for column in [
            Devices::LockedUntil,
            Devices::LastFailureAt,
            Devices::FailedAttempts,
            Devices::FingerprintHash,
            Devices::TokenHash,
        ] {
            manager.alter_table(Table::alter().table(Devices::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
