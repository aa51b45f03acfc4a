//! The `latchkey` command line.

use clap::{Parser, Subcommand};

use crate::domain::audit_chain::ChainHead;

#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about = "OPAQUE authentication service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve {
        /// Apply pending migrations first (always done in development mode).
        #[arg(long)]
        migrate: bool,
    },
    /// Database schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// The keyring that encrypts secrets at rest.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Grant or revoke the admin role (the only way to make the first admin).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Encrypted logical backups of the database (passphrase from
    /// LATCHKEY_BACKUP_PASSPHRASE, else asked for).
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
    /// Cleanup of rows past their retention.
    Maintenance {
        #[command(subcommand)]
        action: MaintenanceAction,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Client: register an account at a latchkey service.
    Register {
        username: String,
        #[command(flatten)]
        target: ClientTarget,
    },
    /// Client: log in (OPAQUE; asks for a TOTP code when needed) and keep
    /// the session in the user's config directory.
    Login {
        username: String,
        #[command(flatten)]
        target: ClientTarget,
    },
    /// Client: the logged-in session (refreshed when its token expired).
    Whoami,
    /// Client: the logged-in user's sessions.
    Sessions,
    /// Client: log out and forget the session.
    Logout,
    /// Client: change the logged-in user's password (asks for the current
    /// one first).
    Passwd {
        /// Read the current and the new password, one per line, from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Where a client command talks to, and how it reads the password.
#[derive(Debug, clap::Args)]
pub struct ClientTarget {
    /// The service's base URL (default: $LATCHKEY_URL, else the last one
    /// used, else http://127.0.0.1:8080). Plain http only to loopback.
    #[arg(long)]
    pub url: Option<String>,
    /// Read the password from the first line of stdin (then a TOTP code,
    /// when asked, from the next) instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    Grant {
        username: String,
    },
    Revoke {
        username: String,
    },
    /// Print a single-use password-reset token for USERNAME (lk_t_), to
    /// hand over out of band; the user redeems it at /v1/account/reset.
    Reset {
        username: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Write every table, from one consistent snapshot, to FILE (a new
    /// file), compressed and encrypted; sealed values stay sealed.
    Create { file: std::path::PathBuf },
    /// Restore FILE into an empty database (migrated first).
    Restore {
        file: std::path::PathBuf,
        /// Delete every row of a non-empty database first.
        #[arg(long)]
        force: bool,
    },
    /// Decrypt FILE and check its structure and row counts, restoring nothing.
    Verify { file: std::path::PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceAction {
    /// Delete dead sessions, refresh and reset tokens and stale devices
    /// past their retention now (what the background job does), and print
    /// the counts.
    Run,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Walk the chain; exits non-zero at the first row that does not verify.
    Verify {
        /// A head published earlier (`SEQ:HASH`, from the log or the
        /// metrics): also fail when the row with that sequence is gone or
        /// differs, i.e. when the newest rows were deleted.
        #[arg(long, value_name = "SEQ:HASH")]
        head: Option<ChainHead>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply all pending migrations.
    Up,
    /// Revert migrations.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List applied and pending migrations.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Show the data keys, their state, age, use count and rows.
    Status,
    /// Make a new active key now (with --signing: a new JWT signing key).
    Rotate {
        #[arg(long)]
        signing: bool,
    },
    /// Move every encrypted row onto the active key and retire unused keys.
    Reencrypt,
}
