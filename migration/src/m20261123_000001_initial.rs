//! Initial schema: users and their roles, OPAQUE and TOTP credentials,
//! recovery codes, devices, sessions, refresh tokens, the hash-chained audit
//! log, and the key material tables (keyring, data_keys, server_setup). Every
//! timestamp is `timestamp with time zone` (text on SQLite); child rows of a
//! user or session go with it (`ON DELETE CASCADE`), while a session outlives
//! its device (`ON DELETE SET NULL`) and audit events carry no foreign key at
//! all. Only portable sea-query builders and schema helpers are used, so the
//! same migration runs on PostgreSQL and SQLite; `down` drops every index and
//! table in the reverse order of creation.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A non-unique secondary index created after its table (unique columns get
/// their index from the UNIQUE constraint instead).
struct Idx {
    name: &'static str,
    table: &'static str,
    col: &'static str,
}

const fn idx(name: &'static str, table: &'static str, col: &'static str) -> Idx {
    Idx { name, table, col }
}

/// Secondary indexes, in creation order (each after its table).
const INDEXES: &[Idx] = &[
    idx("idx_opaque_credentials_key_id", "opaque_credentials", "key_id"),
    idx("idx_totp_credentials_key_id", "totp_credentials", "key_id"),
    idx("idx_recovery_codes_user_id", "recovery_codes", "user_id"),
    idx("idx_devices_user_id", "devices", "user_id"),
    idx("idx_sessions_user_id", "sessions", "user_id"),
    idx("idx_sessions_device_id", "sessions", "device_id"),
    idx("idx_refresh_tokens_session_id", "refresh_tokens", "session_id"),
    idx("idx_audit_events_event", "audit_events", "event"),
    idx("idx_audit_events_user_id", "audit_events", "user_id"),
    idx("idx_audit_events_details_key_id", "audit_events", "details_key_id"),
    idx("idx_data_keys_state", "data_keys", "state"),
    idx("idx_server_setup_key_id", "server_setup", "key_id"),
];

/// Tables in creation order (parents before children).
const TABLES: &[&str] = &[
    "users",
    "user_roles",
    "opaque_credentials",
    "totp_credentials",
    "recovery_codes",
    "devices",
    "sessions",
    "refresh_tokens",
    "audit_events",
    "keyring",
    "data_keys",
    "server_setup",
];

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    CreatedAt,
    UpdatedAt,
    LockedUntil,
    LockReason,
    FailedAttempts,
    LastFailureAt,
}

#[derive(DeriveIden)]
enum UserRoles {
    Table,
    UserId,
    Role,
}

#[derive(DeriveIden)]
enum OpaqueCredentials {
    Table,
    UserId,
    KeyId,
    Ciphertext,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TotpCredentials {
    Table,
    UserId,
    KeyId,
    Ciphertext,
    ConfirmedAt,
    LastUsedStep,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RecoveryCodes {
    Table,
    Id,
    UserId,
    CodeHash,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Id,
    UserId,
    Name,
    Trust,
    FirstSeenAt,
    LastSeenAt,
    LastIp,
    UserAgent,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    DeviceId,
    TokenHash,
    Aal,
    Ip,
    UserAgent,
    CreatedAt,
    LastSeenAt,
    TokenExpiresAt,
    ExpiresAt,
    RevokedAt,
    RevokedReason,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    SessionId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    RotatedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OccurredAt,
    Event,
    UserId,
    SessionId,
    DeviceId,
    Ip,
    Outcome,
    DetailsKeyId,
    Details,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum Keyring {
    Table,
    Id,
    Kdf,
    KdfSalt,
    KdfIterations,
    Canary,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DataKeys {
    Table,
    Id,
    WrappedKey,
    State,
    UseCount,
    CreatedAt,
    RetiredAt,
}

#[derive(DeriveIden)]
enum ServerSetup {
    Table,
    Id,
    KeyId,
    Ciphertext,
    CreatedAt,
}

/// `child.col` → `users.id`, deleted with the user.
fn fk_user(child: &'static str, col: impl IntoIden) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{child}_user_id"))
        .from_tbl(child)
        .from_col(col)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .take()
}

fn tables() -> Vec<TableCreateStatement> {
    vec![
        Table::create()
            .table(Users::Table)
            .col(pk_uuid(Users::Id))
            .col(string_len_uniq(Users::Username, 64))
            .col(timestamp_with_time_zone(Users::CreatedAt))
            .col(timestamp_with_time_zone(Users::UpdatedAt))
            .col(timestamp_with_time_zone_null(Users::LockedUntil))
            .col(text_null(Users::LockReason))
            .col(integer(Users::FailedAttempts).default(0))
            .col(timestamp_with_time_zone_null(Users::LastFailureAt))
            .take(),
        Table::create()
            .table(UserRoles::Table)
            .col(uuid(UserRoles::UserId))
            .col(string_len(UserRoles::Role, 32))
            .primary_key(Index::create().name("pk_user_roles").col(UserRoles::UserId).col(UserRoles::Role))
            .foreign_key(&mut fk_user("user_roles", UserRoles::UserId))
            .take(),
        Table::create()
            .table(OpaqueCredentials::Table)
            .col(pk_uuid(OpaqueCredentials::UserId))
            .col(uuid(OpaqueCredentials::KeyId))
            .col(text(OpaqueCredentials::Ciphertext))
            .col(timestamp_with_time_zone(OpaqueCredentials::CreatedAt))
            .col(timestamp_with_time_zone(OpaqueCredentials::UpdatedAt))
            .foreign_key(&mut fk_user("opaque_credentials", OpaqueCredentials::UserId))
            .take(),
        Table::create()
            .table(TotpCredentials::Table)
            .col(pk_uuid(TotpCredentials::UserId))
            .col(uuid(TotpCredentials::KeyId))
            .col(text(TotpCredentials::Ciphertext))
            .col(timestamp_with_time_zone_null(TotpCredentials::ConfirmedAt))
            .col(big_integer_null(TotpCredentials::LastUsedStep))
            .col(timestamp_with_time_zone(TotpCredentials::CreatedAt))
            .col(timestamp_with_time_zone(TotpCredentials::UpdatedAt))
            .foreign_key(&mut fk_user("totp_credentials", TotpCredentials::UserId))
            .take(),
        Table::create()
            .table(RecoveryCodes::Table)
            .col(pk_uuid(RecoveryCodes::Id))
            .col(uuid(RecoveryCodes::UserId))
            .col(string_len_uniq(RecoveryCodes::CodeHash, 64))
            .col(timestamp_with_time_zone_null(RecoveryCodes::UsedAt))
            .col(timestamp_with_time_zone(RecoveryCodes::CreatedAt))
            .foreign_key(&mut fk_user("recovery_codes", RecoveryCodes::UserId))
            .take(),
        Table::create()
            .table(Devices::Table)
            .col(string_len(Devices::Id, 64).primary_key())
            .col(uuid(Devices::UserId))
            .col(string_len_null(Devices::Name, 128))
            .col(string_len(Devices::Trust, 16).default("unknown"))
            .col(timestamp_with_time_zone(Devices::FirstSeenAt))
            .col(timestamp_with_time_zone(Devices::LastSeenAt))
            .col(string_len_null(Devices::LastIp, 64))
            .col(string_len_null(Devices::UserAgent, 512))
            .foreign_key(&mut fk_user("devices", Devices::UserId))
            .take(),
        Table::create()
            .table(Sessions::Table)
            .col(pk_uuid(Sessions::Id))
            .col(uuid(Sessions::UserId))
            .col(string_len_null(Sessions::DeviceId, 64))
            .col(string_len_uniq(Sessions::TokenHash, 64))
            .col(string_len(Sessions::Aal, 8))
            .col(string_len_null(Sessions::Ip, 64))
            .col(string_len_null(Sessions::UserAgent, 512))
            .col(timestamp_with_time_zone(Sessions::CreatedAt))
            .col(timestamp_with_time_zone(Sessions::LastSeenAt))
            .col(timestamp_with_time_zone(Sessions::TokenExpiresAt))
            .col(timestamp_with_time_zone(Sessions::ExpiresAt))
            .col(timestamp_with_time_zone_null(Sessions::RevokedAt))
            .col(string_len_null(Sessions::RevokedReason, 64))
            .foreign_key(&mut fk_user("sessions", Sessions::UserId))
            .foreign_key(
                ForeignKey::create()
                    .name("fk_sessions_device_id")
                    .from(Sessions::Table, Sessions::DeviceId)
                    .to(Devices::Table, Devices::Id)
                    .on_delete(ForeignKeyAction::SetNull),
            )
            .take(),
        Table::create()
            .table(RefreshTokens::Table)
            .col(pk_uuid(RefreshTokens::Id))
            .col(uuid(RefreshTokens::SessionId))
            .col(string_len_uniq(RefreshTokens::TokenHash, 64))
            .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
            .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
            .col(timestamp_with_time_zone_null(RefreshTokens::RotatedAt))
            .foreign_key(
                ForeignKey::create()
                    .name("fk_refresh_tokens_session_id")
                    .from(RefreshTokens::Table, RefreshTokens::SessionId)
                    .to(Sessions::Table, Sessions::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .take(),
        Table::create()
            .table(AuditEvents::Table)
            .col(big_pk_auto(AuditEvents::Id))
            .col(timestamp_with_time_zone(AuditEvents::OccurredAt))
            .col(string_len(AuditEvents::Event, 64))
            // Deliberately no foreign key: the log outlives deleted users.
            .col(uuid_null(AuditEvents::UserId))
            .col(uuid_null(AuditEvents::SessionId))
            .col(string_len_null(AuditEvents::DeviceId, 64))
            .col(string_len_null(AuditEvents::Ip, 64))
            .col(string_len(AuditEvents::Outcome, 16))
            .col(uuid_null(AuditEvents::DetailsKeyId))
            .col(text_null(AuditEvents::Details))
            .col(string_len(AuditEvents::PrevHash, 64))
            .col(string_len_uniq(AuditEvents::Hash, 64))
            .take(),
        Table::create()
            .table(Keyring::Table)
            // Not auto-increment: the single row always has id = 1.
            .col(integer(Keyring::Id).primary_key())
            .col(string_len(Keyring::Kdf, 32))
            .col(string_len(Keyring::KdfSalt, 64))
            .col(integer(Keyring::KdfIterations))
            .col(text(Keyring::Canary))
            .col(timestamp_with_time_zone(Keyring::CreatedAt))
            .take(),
        Table::create()
            .table(DataKeys::Table)
            .col(pk_uuid(DataKeys::Id))
            .col(text(DataKeys::WrappedKey))
            // 'active' | 'decrypt_only' | 'retired'
            .col(string_len(DataKeys::State, 16))
            .col(big_integer(DataKeys::UseCount).default(0))
            .col(timestamp_with_time_zone(DataKeys::CreatedAt))
            .col(timestamp_with_time_zone_null(DataKeys::RetiredAt))
            .take(),
        Table::create()
            .table(ServerSetup::Table)
            // Not auto-increment: the single row always has id = 1.
            .col(integer(ServerSetup::Id).primary_key())
            .col(uuid(ServerSetup::KeyId))
            .col(text(ServerSetup::Ciphertext))
            .col(timestamp_with_time_zone(ServerSetup::CreatedAt))
            .take(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in tables() {
            let name = table_name(&table);
            manager.create_table(table).await?;
            for i in INDEXES.iter().filter(|i| i.table == name) {
                manager.create_index(Index::create().name(i.name).table(i.table).col(i.col).take()).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for &table in TABLES.iter().rev() {
            for i in INDEXES.iter().rev().filter(|i| i.table == table) {
                manager.drop_index(Index::drop().name(i.name).table(i.table).to_owned()).await?;
            }
            manager.drop_table(Table::drop().table(table).take()).await?;
        }
        Ok(())
    }
}

fn table_name(table: &TableCreateStatement) -> String {
    match table.get_table_name() {
        Some(TableRef::Table(name, _)) => name.1.to_string(),
        _ => unreachable!("every create statement names its table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `down` relies on TABLES listing the created tables in the same order.
    #[test]
    fn table_list_matches_create_order() {
        let created: Vec<String> = tables().iter().map(table_name).collect();
        assert_eq!(created, TABLES);
        for i in INDEXES {
            assert!(TABLES.contains(&i.table), "{} on unknown table", i.name);
        }
    }
}
