//! The command-line client for shell users: `latchkey register`, `login`,
//! `whoami`, `sessions`, `logout` and `passwd` against a running service,
//! with the `latchkey-client` crate.
//!
//! The session (its tokens) and the device credential of each account are
//! kept in `credentials.json` under the user's config directory
//! (`$XDG_CONFIG_HOME/latchkey`, else `~/.config/latchkey`), a file only the
//! user can read (0600, in a 0700 directory). A session token that expired
//! is refreshed (and the file rewritten) before the command runs again.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;

use latchkey_client::{Client, DeviceInfo, LoginOutcome, SecondFactor, Session};
use serde::{Deserialize, Serialize};

use crate::cli::{ClientTarget, Command};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// What the client keeps between commands. Loading it takes an exclusive
/// lock on the user's `credentials.lock`, held until the value is dropped:
/// two commands never refresh with the same token (a second use of a
/// refresh token is a reuse, which ends the session) or write the file at
/// once.
#[derive(Default, Serialize, Deserialize)]
struct Credentials {
    #[serde(skip)]
    lock: Option<std::fs::File>,
    /// The logged-in session, if any.
    session: Option<Stored>,
    /// Device credentials (`lk_d_`) by "URL USERNAME": a later login from
    /// this machine is a known device.
    #[serde(default)]
    devices: BTreeMap<String, String>,
    /// The last URL used.
    url: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    url: String,
    username: String,
    session_token: String,
    refresh_token: String,
}

fn config_dir() -> Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "latchkey").ok_or("no home directory to keep the session in")?;
    Ok(dirs.config_dir().to_path_buf())
}

impl Credentials {
    fn path() -> Result<PathBuf> {
        Ok(config_dir()?.join("credentials.json"))
    }

    fn load() -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let path = Self::path()?;
        let dir = path.parent().ok_or("no config directory")?;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("credentials.lock"))?;
        lock.lock()?;
        let mut credentials = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => return Err(e.into()),
        };
        credentials.lock = Some(lock);
        Ok(credentials)
    }

    /// Writes the file (0600) through a temporary file and a rename, so a
    /// crash never leaves half a file (the lock keeps other commands out).
    fn save(&self) -> Result<()> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let path = Self::path()?;
        let dir = path.parent().ok_or("no config directory")?;
        let tmp = dir.join(".credentials.json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    fn keep(&mut self, url: &str, username: &str, session: &Session) {
        if let Some(token) = &session.device_token {
            self.devices.insert(format!("{url} {username}"), token.clone());
        }
        self.session = Some(Stored {
            url: url.to_owned(),
            username: username.to_owned(),
            session_token: session.session_token.clone(),
            refresh_token: session.refresh_token.clone(),
        });
        self.url = Some(url.to_owned());
    }
}

/// Reads passwords: prompts on the terminal, or lines of stdin.
struct Input {
    stdin: bool,
}

impl Input {
    fn secret(&self, prompt: &str) -> Result<String> {
        if self.stdin {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line)? == 0 {
                return Err(format!("stdin ended before the {}", prompt.trim_end_matches(": ").to_lowercase()).into());
            }
            Ok(line.trim_end_matches(['\r', '\n']).to_owned())
        } else {
            Ok(rpassword::prompt_password(prompt)?)
        }
    }
}

/// Runs a client command; `None` when `command` is not one.
pub async fn run(command: &Command) -> Option<Result<()>> {
    let result = match command {
        Command::Register { username, target } => register(username, target).await,
        Command::Login { username, target } => login(username, target).await,
        Command::Whoami => whoami().await,
        Command::Sessions => sessions().await,
        Command::Logout => logout().await,
        Command::Passwd { password_stdin } => passwd(*password_stdin).await,
        _ => return None,
    };
    Some(result)
}

fn url_for(target: &ClientTarget, credentials: &Credentials) -> String {
    target
        .url
        .clone()
        .or_else(|| std::env::var("LATCHKEY_URL").ok())
        .or_else(|| credentials.url.clone())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

async fn register(username: &str, target: &ClientTarget) -> Result<()> {
    let mut credentials = Credentials::load()?;
    let url = url_for(target, &credentials);
    let input = Input { stdin: target.password_stdin };
    let password = input.secret("New password: ")?;
    if !target.password_stdin && input.secret("Retype new password: ")? != password {
        return Err("the passwords do not match".into());
    }
    let user_id = Client::new(&url)?.register(username, &password).await?;
    credentials.url = Some(url.clone());
    credentials.save()?;
    println!("registered {username} ({user_id}) at {url}");
    Ok(())
}

/// A full login, with the TOTP step when the account asks for it.
async fn authenticate(client: &Client, username: &str, input: &Input, credentials: &Credentials) -> Result<Session> {
    let password = input.secret("Password: ")?;
    let device = DeviceInfo {
        device_token: credentials.devices.get(&format!("{} {username}", client.base_url())).cloned(),
        fingerprint: None,
        name: Some(format!("latchkey CLI on {}", hostname())),
    };
    match client.login(username, &password, &device).await? {
        LoginOutcome::Session(session) => Ok(session),
        LoginOutcome::MfaRequired(step) => {
            let code = input.secret("TOTP code (or a recovery code): ")?;
            let code = code.trim().to_owned();
            let factor = if code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()) {
                SecondFactor::Code(code)
            } else {
                SecondFactor::RecoveryCode(code)
            };
            Ok(client.login_totp(&step.mfa_token, factor).await?)
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "this host".into())
}

async fn login(username: &str, target: &ClientTarget) -> Result<()> {
    let mut credentials = Credentials::load()?;
    let url = url_for(target, &credentials);
    let client = Client::new(&url)?;
    let session = authenticate(&client, username, &Input { stdin: target.password_stdin }, &credentials).await?;
    // A session this file held before is ended, not left behind.
    if let Some(old) = credentials.session.take() {
        let _ = Client::new(&old.url)?.logout(&old.session_token).await;
    }
    credentials.keep(&url, username, &session);
    credentials.save()?;
    println!("logged in as {username} at {url} ({})", session.aal);
    Ok(())
}

/// Runs `call` with the stored session, refreshing it once when its token
/// expired; a session that ended for good is forgotten.
async fn with_session<T, F, Fut>(call: F) -> Result<T>
where
    F: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = latchkey_client::Result<T>>,
{
    let mut credentials = Credentials::load()?;
    let stored = credentials.session.as_ref().ok_or("not logged in: run `latchkey login USERNAME --url URL`")?;
    let client = Client::new(&stored.url)?;
    match call(client.clone(), stored.session_token.clone()).await {
        Err(e) if e.code() == Some("unauthorized") => {}
        other => return Ok(other?),
    }
    let (url, username, refresh_token) = (stored.url.clone(), stored.username.clone(), stored.refresh_token.clone());
    let session = match client.refresh(&refresh_token).await {
        Ok(session) => session,
        Err(e) if e.code() == Some("unauthorized") => {
            credentials.session = None;
            credentials.save()?;
            return Err("the session ended: run `latchkey login` again".into());
        }
        Err(e) => return Err(e.into()),
    };
    credentials.keep(&url, &username, &session);
    credentials.save()?;
    Ok(call(client, session.session_token).await?)
}

async fn whoami() -> Result<()> {
    let me = with_session(|client, token| async move { client.whoami(&token).await }).await?;
    println!("{} ({})", me.username, me.user_id);
    println!("session   {}", me.session_id);
    println!("aal       {}", me.aal);
    println!("login at  {}", me.auth_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    println!("expires   {}", me.session_expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    Ok(())
}

async fn sessions() -> Result<()> {
    let list = with_session(|client, token| async move { client.sessions(&token).await }).await?;
    println!("{:<38} {:<5} {:<21} {:<16} device", "session", "aal", "last seen", "ip");
    for s in list {
        let mark = if s.current { " (this one)" } else { "" };
        let device = s.device.and_then(|d| d.name).unwrap_or_default();
        let ip = s.ip.unwrap_or_default();
        println!(
            "{:<38} {:<5} {:<21} {:<16} {device}{mark}",
            s.session_id,
            s.aal,
            s.last_seen_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ip
        );
    }
    Ok(())
}

async fn logout() -> Result<()> {
    let mut credentials = Credentials::load()?;
    let Some(stored) = credentials.session.take() else {
        println!("not logged in");
        return Ok(());
    };
    let result = Client::new(&stored.url)?.logout(&stored.session_token).await;
    // An expired token: the refresh token still names the session; a
    // refresh then a logout ends it for good.
    let result = match result {
        Err(e) if e.code() == Some("unauthorized") => {
            match Client::new(&stored.url)?.refresh(&stored.refresh_token).await {
                Ok(session) => Client::new(&stored.url)?.logout(&session.session_token).await,
                Err(_) => Ok(()),
            }
        }
        other => other,
    };
    credentials.save()?;
    result?;
    println!("logged out of {} at {}", stored.username, stored.url);
    Ok(())
}

async fn passwd(password_stdin: bool) -> Result<()> {
    let mut credentials = Credentials::load()?;
    let stored = credentials.session.as_ref().ok_or("not logged in: run `latchkey login USERNAME --url URL`")?;
    let (url, username) = (stored.url.clone(), stored.username.clone());
    let client = Client::new(&url)?;
    let input = Input { stdin: password_stdin };
    // Proving the current password is the step-up the change needs.
    eprintln!("Current password for {username}:");
    let session = authenticate(&client, &username, &input, &credentials).await?;
    let new_password = input.secret("New password: ")?;
    if !password_stdin && input.secret("Retype new password: ")? != new_password {
        let _ = client.logout(&session.session_token).await;
        return Err("the passwords do not match".into());
    }
    // The new session's token may expire during the key stretching on a
    // slow machine: refresh once and go on (the login stays recent).
    let session = match client.change_password(&session.session_token, &new_password).await {
        Err(e) if e.code() == Some("unauthorized") => {
            let refreshed = client.refresh(&session.refresh_token).await?;
            match client.change_password(&refreshed.session_token, &new_password).await {
                Ok(()) => refreshed,
                Err(e) => {
                    let _ = client.logout(&refreshed.session_token).await;
                    return Err(e.into());
                }
            }
        }
        Err(e) => {
            let _ = client.logout(&session.session_token).await;
            return Err(e.into());
        }
        Ok(()) => session,
    };
    // Every other session of the user was revoked; keep the new one.
    credentials.keep(&url, &username, &session);
    credentials.save()?;
    println!("password changed for {username}; other sessions were ended");
    Ok(())
}
