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
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print the OpenAPI document.
    Openapi,
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
