//! Row-level security on the per-user tables (Postgres; skipped on SQLite,
//! which has none).
//!
//! Each per-user table has RLS enabled and FORCED (so the table owner is
//! held to it too; only superusers and BYPASSRLS roles are not), with
//! permissive policies on transaction-local settings
//! (`set_config(name, value, true)`):
//!
//! - `latchkey.user_id`: the rows of that user, for every command (the
//!   `WITH CHECK` keeps writes to that user too);
//! - `latchkey.token_hash`: SELECT of the session, refresh token or reset
//!   token whose hash it is, and of the session a refresh token belongs to
//!   (whoami, refresh and introspection find the row before they know the
//!   user);
//! - `latchkey.username`: SELECT of the OPAQUE record of the user with that
//!   username (login's first read);
//! - `latchkey.device_id`: SELECT of the device with that id (an admin
//!   names a device by id alone);
//! - `latchkey.scope`: a named cross-user task, each allowed on the tables
//!   and commands it needs only: `maintenance` (cleanup: read and delete
//!   sessions, refresh and reset tokens, devices), `reencrypt` (read OPAQUE
//!   and TOTP credentials; each is re-sealed as its user), `directory` (read TOTP
//!   credentials: the admin user list), `backup` (read everything),
//!   `restore` (write everything).
//!
//! Devices are also visible through a visible session that names them (the
//! session list shows its device's name). A statement with no setting, or
//! one that forgets its `WHERE user_id = …`, sees no row of anyone else.
//!
//! Refresh tokens get their own `user_id` (filled from their session), so
//! their policy needs no look into `sessions`, whose token policy looks
//! into `refresh_tokens` (two policies reading each other would recurse).
//!
//! A new per-user table takes [`protect`] (and [`allow`] for any lookup or
//! task that must reach it) in its own migration.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

pub const USER_SETTING: &str = "latchkey.user_id";
pub const TOKEN_SETTING: &str = "latchkey.token_hash";
pub const USERNAME_SETTING: &str = "latchkey.username";
pub const DEVICE_SETTING: &str = "latchkey.device_id";
pub const SCOPE_SETTING: &str = "latchkey.scope";

pub const MAINTENANCE: &str = "maintenance";
pub const REENCRYPT: &str = "reencrypt";
pub const DIRECTORY: &str = "directory";
pub const BACKUP: &str = "backup";
pub const RESTORE: &str = "restore";

/// The tables this migration protects, each with its owner column.
pub const TABLES: &[&str] = &[
    "opaque_credentials",
    "totp_credentials",
    "recovery_codes",
    "devices",
    "sessions",
    "refresh_tokens",
    "reset_tokens",
    "webauthn_credentials",
];

/// A setting as SQL: NULL when unset (an unset custom setting reads as ''
/// once it has been set in an earlier transaction of the connection).
pub fn setting(name: &str) -> String {
    format!("NULLIF(current_setting('{name}', true), '')")
}

/// True when the cross-user task `task` is set.
pub fn task_is(task: &str) -> String {
    format!("{} = '{task}'", setting(SCOPE_SETTING))
}

fn token_matches(column: &str) -> String {
    format!("{column} = {}", setting(TOKEN_SETTING))
}

/// Enables and forces row-level security on `table`, whose rows belong to
/// the user in `owner` (a uuid column), with the policies every per-user
/// table has: that user's rows for every command, reads for `backup`,
/// everything for `restore`. Postgres only; a no-op elsewhere.
pub async fn protect<C: ConnectionTrait>(conn: &C, table: &str, owner: &str) -> Result<(), DbErr> {
    if conn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    conn.execute_unprepared(&format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")).await?;
    conn.execute_unprepared(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY")).await?;
    let user = format!("{owner} = {}::uuid", setting(USER_SETTING));
    conn.execute_unprepared(&format!(
        "CREATE POLICY {table}_user ON {table} FOR ALL USING ({user}) WITH CHECK ({user})"
    ))
    .await?;
    allow(conn, table, "backup", "SELECT", &task_is(BACKUP)).await?;
    allow(conn, table, "restore", "ALL", &task_is(RESTORE)).await
}

/// One more permissive policy on a protected table: `command` (SELECT,
/// UPDATE, DELETE or ALL) on the rows `using` is true for; writes it allows
/// must satisfy it too.
pub async fn allow<C: ConnectionTrait>(
    conn: &C,
    table: &str,
    name: &str,
    command: &str,
    using: &str,
) -> Result<(), DbErr> {
    if conn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let check = match command {
        "ALL" | "UPDATE" => format!(" WITH CHECK ({using})"),
        _ => String::new(),
    };
    conn.execute_unprepared(&format!("CREATE POLICY {table}_{name} ON {table} FOR {command} USING ({using}){check}"))
        .await?;
    Ok(())
}

/// Drops what [`protect`] and [`allow`] made on `table`.
pub async fn unprotect<C: ConnectionTrait>(conn: &C, table: &str) -> Result<(), DbErr> {
    if conn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    conn.execute_unprepared(&format!(
        "DO $$ DECLARE p record; BEGIN
           FOR p IN SELECT policyname FROM pg_policies WHERE schemaname = current_schema() AND tablename = '{table}' LOOP
             EXECUTE format('DROP POLICY %I ON {table}', p.policyname);
           END LOOP;
         END $$"
    ))
    .await?;
    conn.execute_unprepared(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")).await?;
    conn.execute_unprepared(&format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")).await?;
    Ok(())
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    UserId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .add_column(ColumnDef::new(RefreshTokens::UserId).uuid().null())
                    .to_owned(),
            )
            .await?;
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "UPDATE refresh_tokens SET user_id = (SELECT user_id FROM sessions WHERE sessions.id = refresh_tokens.session_id)",
        )
        .await?;
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        conn.execute_unprepared("ALTER TABLE refresh_tokens ALTER COLUMN user_id SET NOT NULL").await?;

        for table in TABLES {
            protect(conn, table, "user_id").await?;
        }
        // Lookups before the user is known.
        let by_refresh = format!(
            "EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.session_id = sessions.id AND r.{})",
            token_matches("token_hash")
        );
        allow(conn, "sessions", "token", "SELECT", &format!("{} OR {by_refresh}", token_matches("token_hash"))).await?;
        allow(conn, "refresh_tokens", "token", "SELECT", &token_matches("token_hash")).await?;
        allow(conn, "reset_tokens", "token", "SELECT", &token_matches("token_hash")).await?;
        let by_username = format!(
            "EXISTS (SELECT 1 FROM users u WHERE u.id = opaque_credentials.user_id AND u.username = {})",
            setting(USERNAME_SETTING)
        );
        allow(conn, "opaque_credentials", "username", "SELECT", &by_username).await?;
        allow(conn, "devices", "session", "SELECT", "EXISTS (SELECT 1 FROM sessions s WHERE s.device_id = devices.id)")
            .await?;
        let by_id = format!("id = {}", setting(DEVICE_SETTING));
        allow(conn, "devices", "by_id", "SELECT", &by_id).await?;
        // Cross-user tasks.
        // Cleanup reads and deletes; it never inserts or updates.
        for table in ["sessions", "refresh_tokens", "reset_tokens", "devices"] {
            allow(conn, table, "maintenance", "SELECT", &task_is(MAINTENANCE)).await?;
            allow(conn, table, "maintenance_delete", "DELETE", &task_is(MAINTENANCE)).await?;
        }
        for table in ["opaque_credentials", "totp_credentials", "webauthn_credentials"] {
            allow(conn, table, "reencrypt", "SELECT", &task_is(REENCRYPT)).await?;
        }
        allow(conn, "totp_credentials", "directory", "SELECT", &task_is(DIRECTORY)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for table in TABLES.iter().rev() {
            unprotect(conn, table).await?;
        }
        manager
            .alter_table(Table::alter().table(RefreshTokens::Table).drop_column(RefreshTokens::UserId).to_owned())
            .await
    }
}
