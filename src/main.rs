use std::process::ExitCode;

use clap::Parser as _;
use latchkey::cli::{
    AdminAction, AuditAction, BackupAction, Cli, Command, KeysAction, MaintenanceAction, MigrateAction,
};
use latchkey::config::Config;
use latchkey::{app, http, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The client commands talk to a service: they need none of its settings.
    if let Some(command) = &cli.command
        && let Some(result) = latchkey::client_cli::run(command).await
    {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("latchkey: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (config, report) = match Config::load() {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("latchkey: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init_logging(&config);
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
    match run(cli.command.unwrap_or(Command::Serve { migrate: false }), config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "latchkey stopped");
            eprintln!("latchkey: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve { migrate } => {
            let application = app::Application::build(config, migrate).await?;
            application.run_until_stopped().await?;
        }
        Command::Register { .. }
        | Command::Login { .. }
        | Command::Whoami
        | Command::Sessions
        | Command::Logout
        | Command::Passwd { .. } => return Err("client commands run before the service's settings load".into()),
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&http::openapi())?);
        }
        Command::Migrate { action } => {
            let db = app::open_db(&config, false).await?;
            match action {
                MigrateAction::Up => db.migrate_up().await?,
                MigrateAction::Down { steps } => db.migrate_down(steps).await?,
                MigrateAction::Status => {}
            }
            let (applied, pending) = db.migration_status().await?;
            for name in applied {
                println!("applied  {name}");
            }
            for name in pending {
                println!("pending  {name}");
            }
        }
        Command::Admin { action } => {
            let core = app::open_core(&config, config.migrate_on_start()).await?;
            let (username, grant) = match &action {
                AdminAction::Grant { username } => (username, true),
                AdminAction::Revoke { username } => (username, false),
                AdminAction::Reset { username } => {
                    let (token, expires_at) = core.issue_reset_for(username, chrono::Utc::now()).await?;
                    // The token on stdout only: hand it to the user out of band.
                    println!("{token}");
                    eprintln!("reset token for {username}, single use, valid until {expires_at}");
                    return Ok(());
                }
            };
            let changed = core.set_admin(username, grant, chrono::Utc::now()).await?;
            let verb = if grant { "granted to" } else { "revoked from" };
            let note = if changed { "" } else { " (no change)" };
            println!("admin role {verb} {username}{note}");
        }
        Command::Backup { action } => {
            let header = match action {
                BackupAction::Create { file } => {
                    let passphrase = backup_passphrase(&config, true)?;
                    let db = app::open_db(&config, false).await?;
                    let header = latchkey::backup::create(&db, &file, passphrase).await?;
                    println!("backup written to {}", file.display());
                    header
                }
                BackupAction::Restore { file, force } => {
                    let passphrase = backup_passphrase(&config, false)?;
                    let db = app::open_db(&config, false).await?;
                    let header = latchkey::backup::restore(&db, &file, passphrase, force).await?;
                    println!("restored from {}", file.display());
                    header
                }
                BackupAction::Verify { file } => {
                    let passphrase = backup_passphrase(&config, false)?;
                    let header = latchkey::backup::verify(&file, passphrase).await?;
                    println!("backup intact: {}", file.display());
                    header
                }
            };
            println!(
                "format {} version {}, taken {} from {}, schema at {}",
                header.format,
                header.version,
                header.created_at.to_rfc3339(),
                header.backend,
                header.migrations.last().map_or("none", String::as_str)
            );
            for table in &header.tables {
                println!("{:>10} {}", table.rows, table.name);
            }
        }
        Command::Maintenance { action: MaintenanceAction::Run } => {
            let core = app::open_core(&config, config.migrate_on_start()).await?;
            let report = core.cleanup(&app::retention(&config), chrono::Utc::now()).await?;
            for (kind, n) in report.counts() {
                println!("deleted {n:>8} {kind}");
            }
        }
        Command::Audit { action: AuditAction::Verify { head } } => {
            let db = app::open_db(&config, false).await?;
            let keyring = app::open_keyring(&config, &db).await?;
            let report = latchkey::domain::audit_chain::verify(&db, &keyring, head.as_ref()).await?;
            let checked = report.checked;
            match report.fault {
                None => {
                    let head_text = report.head.map_or_else(|| "none (empty)".to_owned(), |h| h.to_string());
                    println!(
                        "audit chain intact: {checked} events verified ({} from before keying, with SHA-256); head {head_text}",
                        report.unkeyed
                    );
                    if let Some(published) = head {
                        println!("the chain still reaches the published head {}", published.sequence);
                    }
                }
                Some(fault @ latchkey::domain::audit_chain::ChainFault::Broken { id }) => {
                    println!("audit chain BROKEN at event id {id} ({checked} events before it verified)");
                    return Err(format!("audit chain {fault}").into());
                }
                Some(fault) => {
                    println!("audit chain FAILED: {fault} ({checked} events verified)");
                    return Err(format!("audit chain {fault}").into());
                }
            }
        }
        Command::Keys { action } => {
            let core = app::open_core(&config, config.migrate_on_start()).await?;
            let now = chrono::Utc::now();
            match action {
                KeysAction::Status => {}
                KeysAction::Rotate { signing: false } => {
                    println!("new active key {}", core.rotate_keys("cli", now).await?)
                }
                KeysAction::Rotate { signing: true } => {
                    println!("new JWT signing key {}", core.rotate_signing_key("cli", now).await?);
                }
                KeysAction::Reencrypt => {
                    let report = core.reencrypt_keys(config.keyring.reencrypt_batch, "cli", now).await?;
                    println!(
                        "moved {} rows, {} unreadable, retired {} keys",
                        report.moved,
                        report.failed,
                        report.retired.len()
                    );
                }
            }
            let status = core.keys_status(now).await?;
            println!("kdf {} ({} iterations)", status.kdf, status.kdf_iterations);
            println!("{:<38} {:<13} {:>8} {:>10} {:>8}", "key", "state", "age(d)", "uses", "rows");
            for key in status.keys {
                println!(
                    "{:<38} {:<13} {:>8} {:>10} {:>8}",
                    key.key_id, key.state, key.age_days, key.use_count, key.rows
                );
            }
            println!("\nJWT signing keys");
            println!("{:<38} {:<10} {:<27} stopped signing", "kid", "state", "created");
            for key in core.signing_keys_status().await? {
                let retired = key.retired_at.map(|t| t.to_rfc3339()).unwrap_or_default();
                println!("{:<38} {:<10} {:<27} {retired}", key.kid, key.state, key.created_at.to_rfc3339());
            }
        }
    }
    Ok(())
}

/// The backup passphrase: configured, else asked for on the terminal
/// (twice when it encrypts).
fn backup_passphrase(config: &Config, confirm: bool) -> Result<secrecy::SecretString, Box<dyn std::error::Error>> {
    if let Some(passphrase) = &config.backup_passphrase {
        return Ok(passphrase.clone());
    }
    let first = rpassword::prompt_password("backup passphrase: ")?;
    if first.is_empty() {
        return Err("an empty backup passphrase".into());
    }
    if confirm && rpassword::prompt_password("again: ")? != first {
        return Err("the passphrases differ".into());
    }
    Ok(secrecy::SecretString::from(first))
}
