//! The start-up steps of docker-compose.yml, run without Docker: the
//! secret files from scripts/compose-secrets; deploy/compose-entrypoint
//! running `latchkey migrate up` as the owner; deploy/compose-app-role (psql)
//! making the login role in latchkey_app; the entry point again running
//! `latchkey serve` as that role. The psql step is skipped, loudly, when psql
//! is not installed (.ci/run installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::{DbKind, TestDb, postgres_admin_url, redis_url, unique_prefix};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of scripts/compose-secrets in a fresh directory, run there: the
/// script works beside docker-compose.yml, one level above itself.
fn compose_secrets(dir: &Path) -> Output {
    std::fs::create_dir_all(dir.join("scripts")).expect("mkdir");
    std::fs::copy(Path::new(ROOT).join("scripts/compose-secrets"), dir.join("scripts/compose-secrets")).expect("copy");
    Command::new("bash").arg(dir.join("scripts/compose-secrets")).output().expect("run compose-secrets")
}

/// A directory holding only `latchkey` (the binary under test), for PATH.
fn bin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_latchkey"), dir.path().join("latchkey")).expect("symlink");
    dir
}

/// deploy/compose-entrypoint with only the given environment (and PATH).
fn entrypoint(bin: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg(Path::new(ROOT).join("deploy/compose-entrypoint"))
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .envs(env.iter().copied());
    cmd
}

#[test]
fn compose_secrets_creates_missing_files_and_keeps_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    std::fs::write(secrets.join("master_password"), "kept as it is, any characters: +/=").expect("write");

    let out = compose_secrets(dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&secrets), 0o700, "other users of the host cannot read secrets/");
    let mut values = Vec::new();
    for name in ["postgres_password", "app_db_password", "service_tokens"] {
        let path = secrets.join(name);
        let value = std::fs::read_to_string(&path).expect(name);
        assert_eq!(value.len(), 43, "{name}: 256 bits of URL-safe base64");
        assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{name}: {value:?}");
        assert_eq!(mode(&path), 0o644, "{name}: readable by the containers' uids");
        values.push(value);
    }
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 3, "each value is its own");
    assert_eq!(
        std::fs::read_to_string(secrets.join("master_password")).expect("read"),
        "kept as it is, any characters: +/="
    );

    // A second run changes nothing; an empty file or a password that cannot
    // go into a URL is reported, not replaced.
    let before = std::fs::read_to_string(secrets.join("app_db_password")).expect("read");
    assert!(compose_secrets(dir.path()).status.success());
    assert_eq!(std::fs::read_to_string(secrets.join("app_db_password")).expect("read"), before);
    std::fs::write(secrets.join("service_tokens"), "").expect("write");
    std::fs::write(secrets.join("postgres_password"), "p@ss/word").expect("write");
    let out = compose_secrets(dir.path());
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("secrets/service_tokens is empty"), "{err}");
    assert!(err.contains("secrets/postgres_password may hold only"), "{err}");
    assert_eq!(std::fs::read_to_string(secrets.join("postgres_password")).expect("read"), "p@ss/word");
}

#[test]
fn compose_entrypoint_refuses_a_missing_or_empty_secret_and_says_how_to_make_it() {
    let bin = bin_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("service_tokens");
    std::fs::write(&empty, "").expect("write");
    let missing = dir.path().join("master_password");
    for (var, path, name) in [
        ("LATCHKEY_SERVICE_TOKENS_FILE", &empty, "service_tokens"),
        ("LATCHKEY_MASTER_PASSWORD_FILE", &missing, "master_password"),
    ] {
        let out = entrypoint(bin.path(), &[(var, path.to_str().expect("utf8"))]).arg("openapi").output().expect("run");
        assert!(!out.status.success(), "{var}");
        assert!(out.stdout.is_empty(), "latchkey never ran");
        let err = text(&out.stderr);
        assert!(err.contains("is missing or empty") && err.contains("scripts/compose-secrets"), "{err}");
        assert!(err.contains(&format!("> secrets/{name}")), "names the file to create: {err}");
    }

    // A database password that would break the URL stops it too.
    let password = dir.path().join("app_db_password");
    std::fs::write(&password, "p@ss:word").expect("write");
    let out =
        entrypoint(bin.path(), &[("DB_USER", "latchkey"), ("DB_PASSWORD_FILE", password.to_str().expect("utf8"))])
            .arg("openapi")
            .output()
            .expect("run");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("may hold only letters, digits"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("p@ss:word"), "the password is never printed");
}

/// user, password, host, port, database of a `postgres://` URL.
fn url_parts(url: &str) -> (String, String, String, String, String) {
    let rest = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")).expect("postgres URL");
    let (auth, rest) = rest.rsplit_once('@').expect("a user in the test URL");
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, db) = rest.split_once('/').expect("a database");
    let db = db.split(['?', '#']).next().unwrap_or(db);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    (user.into(), password.into(), host.into(), port.into(), db.into())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_start_up_migrates_as_the_owner_and_serves_as_the_app_role() {
    use sea_orm::{ConnectionTrait as _, Database, DatabaseBackend, Statement};
    let Some(psql) = which("psql") else {
        eprintln!("SKIPPED: psql is not installed (Debian: apt-get install postgresql-client)");
        return;
    };
    let db = TestDb::new(DbKind::Postgres).await;
    let (owner, owner_password, host, port, name) = url_parts(&db.url);
    let work = tempfile::tempdir().expect("tempdir");
    assert!(compose_secrets(work.path()).status.success());
    let secrets = work.path().join("secrets");
    // The owner's password is the test URL's; without one the test server
    // trusts every login, and the generated file's value is as good as any.
    if !owner_password.is_empty() {
        std::fs::write(secrets.join("postgres_password"), &owner_password).expect("write");
    }
    let secret = |name: &str| secrets.join(name).to_str().expect("utf8").to_owned();
    let bin = bin_dir();
    let data = tempfile::tempdir().expect("tempdir");
    let common = |user: &str, password_file: &str| {
        let mut cmd = entrypoint(
            bin.path(),
            &[
                ("LATCHKEY_ENV", "production"),
                ("LATCHKEY_MASTER_PASSWORD_FILE", &secret("master_password")),
                ("LATCHKEY_DATA_DIR", data.path().to_str().expect("utf8")),
                ("DB_HOST", &host),
                ("DB_PORT", &port),
                ("DB_NAME", &name),
                ("DB_USER", user),
                ("DB_PASSWORD_FILE", password_file),
            ],
        );
        cmd.stdin(Stdio::null());
        cmd
    };

    // 1. migrate, as the owner.
    let migrate = common(&owner, &secret("postgres_password")).args(["migrate", "up"]).output().expect("migrate");
    assert!(migrate.status.success(), "{}", text(&migrate.stderr));
    assert!(text(&migrate.stdout).contains("applied") && !text(&migrate.stdout).contains("pending"));

    // 2. the login role, as the owner; twice, as every start does.
    let role = format!("lk_test_app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    for _ in 0..2 {
        let out = Command::new("sh")
            .arg(Path::new(ROOT).join("deploy/compose-app-role"))
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", psql.parent().expect("dir").display()))
            .envs([("PGHOST", &host), ("PGPORT", &port), ("PGUSER", &owner), ("PGDATABASE", &name)])
            .env("APP_ROLE", &role)
            .env("OWNER_PASSWORD_FILE", secret("postgres_password"))
            .env("APP_PASSWORD_FILE", secret("app_db_password"))
            .stdin(Stdio::null())
            .output()
            .expect("app-role");
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stderr).is_empty(), "quiet on a second run: {}", text(&out.stderr));
    }
    let admin = Database::connect(postgres_admin_url()).await.expect("connect");
    let row = admin
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            format!(
                "SELECT r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolcreaterole AND NOT r.rolcreatedb AS plain, \
                 array_agg(g.rolname)::text AS groups FROM pg_roles r \
                 JOIN pg_auth_members m ON m.member = r.oid JOIN pg_roles g ON g.oid = m.roleid \
                 WHERE r.rolname = '{role}' GROUP BY r.rolcanlogin, r.rolsuper, r.rolcreaterole, r.rolcreatedb"
            ),
        ))
        .await
        .expect("query")
        .expect("the role exists");
    assert!(row.try_get::<bool>("", "plain").expect("plain"), "a plain login role");
    assert_eq!(row.try_get::<String>("", "groups").expect("groups"), "{latchkey_app}");

    // 3. serve, as that role.
    let port_free = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let prefix = unique_prefix();
    let logs = work.path().join("serve.log");
    let mut child = common(&role, &secret("app_db_password"))
        .arg("serve")
        .env("LATCHKEY_BIND", format!("127.0.0.1:{port_free}"))
        .env("LATCHKEY_REDIS_URL", redis_url())
        .env("LATCHKEY_REDIS_PREFIX", &prefix)
        .env("LATCHKEY_SERVICE_TOKENS_FILE", secret("service_tokens"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&logs).expect("log file"))
        .spawn()
        .expect("serve");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..240 {
        if let Ok(res) = client.get(format!("http://127.0.0.1:{port_free}/readyz")).send().await {
            ready = res.status() == 200;
            if ready {
                break;
            }
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sessions = admin
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            format!("SELECT DISTINCT usename::text AS name FROM pg_stat_activity WHERE datname = '{name}'"),
        ))
        .await
        .expect("query");
    let users: Vec<String> = sessions.iter().map(|r| r.try_get::<String>("", "name").expect("name")).collect();
    let token = std::fs::read_to_string(secrets.join("service_tokens")).expect("token");
    let check = client
        .post(format!("http://127.0.0.1:{port_free}/v1/ratelimit/check"))
        .bearer_auth(token)
        .json(&serde_json::json!({"namespace": "none", "key": "k"}))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let _ = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let log = std::fs::read_to_string(&logs).unwrap_or_default();
    let _ = admin.execute_unprepared(&format!("DROP ROLE IF EXISTS {role}")).await;

    assert!(ready, "latchkey did not become ready: {log}");
    assert_eq!(users, [role], "the service connects as the app role only");
    assert_ne!(check.expect("ratelimit check"), 401, "the service token from the secret file is accepted");
    assert!(!log.contains("WARN") && !log.contains("\"warn"), "no warnings (unknown variables): {log}");
}
