//! The keyed audit chain's anchor outside the audit table: the keyring row
//! records which row keyed the chain (its id and hash, with a MAC under the
//! chain key). Someone who can write only `audit_events` can then neither
//! delete the marker to have the chain keyed anew over a forged history,
//! nor forge the anchor.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Keyring {
    Table,
    AuditChainMark,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Keyring::Table)
                    .add_column(ColumnDef::new(Keyring::AuditChainMark).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Keyring::Table).drop_column(Keyring::AuditChainMark).to_owned()).await
    }
}
