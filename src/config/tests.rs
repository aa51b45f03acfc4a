use std::path::PathBuf;
use std::time::Duration;

use figment::value::Value;
use secrecy::{ExposeSecret, SecretString};

use super::env::{FILE_ONLY, Kind, env_keys};
use super::*;
use crate::domain::ratelimit::Rule;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn defaults_without_anything() {
    let (c, report) = Config::load_from(vec![]).expect("defaults load");
    assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert!(c.database_url.is_none() && c.redis_url.is_none());
    assert_eq!(c.keyring.pbkdf2_iterations, 600_000);
    assert_eq!(c.keyring.rotate_after, Duration::from_secs(90 * 86400));
    assert!(c.migrate_on_start());
    assert!(report.warnings.is_empty());
    assert!(c.effective_database_url().starts_with("sqlite://"));
}

#[test]
fn file_then_env_override() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latchkey.toml");
    std::fs::write(
        &path,
        "bind = \"127.0.0.1:9000\"\nlog_level = \"debug\"\n[keyring]\nrotate_after = \"30d\"\npbkdf2_iterations = 700000\n",
    )
    .expect("write");
    let (c, _) = Config::load_from(env(&[
        ("LATCHKEY_CONFIG", path.to_str().expect("utf8")),
        ("LATCHKEY_BIND", "127.0.0.1:9100"),
        ("LATCHKEY_KEYRING__ROTATE_AFTER_USES", "42"),
        ("LATCHKEY_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
    ]))
    .expect("load");
    assert_eq!(c.bind.port(), 9100, "env wins over file");
    assert_eq!(c.log_level, "debug", "file wins over default");
    assert_eq!(c.keyring.rotate_after, Duration::from_secs(30 * 86400));
    assert_eq!(c.keyring.pbkdf2_iterations, 700_000);
    assert_eq!(c.keyring.rotate_after_uses, 42);
    assert_eq!(c.trusted_proxies.len(), 2);
    assert!(c.trusted_proxies[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().expect("ip")));
}

#[test]
fn unknown_file_key_is_an_error_and_unknown_env_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "bnid = \"x\"\n").expect("write");
    let err = Config::load_from(env(&[("LATCHKEY_CONFIG", path.to_str().expect("utf8"))])).expect_err("refused");
    assert!(err.to_string().contains("bnid"), "{err}");

    let (_, report) =
        Config::load_from(env(&[("LATCHKEY_BNID", "x"), ("LATCHKEY_TEST_DATABASE_URL", "y")])).expect("load");
    assert_eq!(report.warnings, vec!["ignoring unknown environment variable LATCHKEY_BNID".to_owned()]);
}

#[test]
fn secrets_from_files_and_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mp");
    std::fs::write(&path, "correct horse battery staple\n").expect("write");
    let (c, _) =
        Config::load_from(env(&[("LATCHKEY_MASTER_PASSWORD_FILE", path.to_str().expect("utf8"))])).expect("load");
    let mp = c.master_password.as_ref().expect("password set");
    assert_eq!(mp.expose_secret(), "correct horse battery staple");
    assert!(!format!("{c:?}").contains("horse"), "Debug must not print secrets");

    let both = Config::load_from(env(&[
        ("LATCHKEY_MASTER_PASSWORD", "x"),
        ("LATCHKEY_MASTER_PASSWORD_FILE", path.to_str().expect("utf8")),
    ]));
    assert!(both.is_err());
}

/// Every secret can come from `<VAR>_FILE`; other keys cannot.
#[test]
fn each_secret_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write");
        path.to_str().expect("utf8").to_owned()
    };
    let (c, report) = Config::load_from(env(&[
        ("LATCHKEY_DATABASE_URL_FILE", &file("db", "postgres://u:p@db/lk\n")),
        ("LATCHKEY_REDIS_URL_FILE", &file("redis", "redis://:p@cache:6379")),
        ("LATCHKEY_SERVICE_TOKENS_FILE", &file("tokens", "t1, t2\n")),
    ]))
    .expect("load");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(c.database_url.as_ref().map(|s| s.expose_secret().to_owned()).as_deref(), Some("postgres://u:p@db/lk"));
    assert_eq!(c.redis_url.as_ref().map(|s| s.expose_secret().to_owned()).as_deref(), Some("redis://:p@cache:6379"));
    let tokens: Vec<&str> = c.service_tokens.iter().map(|t| t.expose_secret()).collect();
    assert_eq!(tokens, ["t1", "t2"]);

    let (_, report) = Config::load_from(env(&[("LATCHKEY_LOG_LEVEL_FILE", "x"), ("LATCHKEY_TLS_CERT_FILE_FILE", "x")]))
        .expect("load");
    assert_eq!(
        report.warnings,
        [
            "ignoring unknown environment variable LATCHKEY_LOG_LEVEL_FILE",
            "ignoring unknown environment variable LATCHKEY_TLS_CERT_FILE_FILE"
        ]
    );
}

/// Numbers, booleans and durations are parsed as figment's `Env` parses
/// them (quotes and padding go); free text, paths, lists and secrets are
/// taken verbatim, so a password that looks like a number stays a string.
#[test]
fn env_values_parsed_or_verbatim_by_kind() {
    let (c, report) = Config::load_from(env(&[
        ("LATCHKEY_MASTER_PASSWORD", "12345678901234567890"),
        ("LATCHKEY_REDIS_PREFIX", "[a,b]"),
        ("LATCHKEY_LOG_LEVEL", "\"debug\""),
        ("LATCHKEY_TLS_CERT_FILE", "123"),
        ("LATCHKEY_TLS_KEY_FILE", "true"),
        ("LATCHKEY_REDIS__CA_FILE", "42"),
        ("LATCHKEY_SERVICE_TOKENS", "[x, y]"),
        ("LATCHKEY_SESSIONS__IDLE_TIMEOUT", "\"45m\""),
        ("LATCHKEY_DATABASE__ACQUIRE_TIMEOUT", " 7s "),
        ("LATCHKEY_MIGRATE_ON_START", "false"),
        ("LATCHKEY_DATABASE__LOG_STATEMENTS", "true"),
        ("LATCHKEY_REDIS__POOL_SIZE", " 3 "),
    ]))
    .expect("load");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(c.master_password.as_ref().expect("set").expose_secret(), "12345678901234567890");
    assert_eq!(c.redis_prefix, "[a,b]");
    assert_eq!(c.log_level, "\"debug\"");
    assert_eq!(c.tls_cert_file, Some(PathBuf::from("123")));
    assert_eq!(c.tls_key_file, Some(PathBuf::from("true")));
    assert_eq!(c.redis.ca_file, Some(PathBuf::from("42")));
    let tokens: Vec<&str> = c.service_tokens.iter().map(|t| t.expose_secret()).collect();
    assert_eq!(tokens, ["[x", "y]"]);
    assert_eq!(c.sessions.idle_timeout, Duration::from_secs(45 * 60));
    assert_eq!(c.database.acquire_timeout, Duration::from_secs(7));
    assert!(!c.migrate_on_start());
    assert!(c.database.log_statements);
    assert_eq!(c.redis.pool_size, 3);
}

/// Environment variables reach top-level keys and `SECTION__KEY`; the
/// per-endpoint rules and the namespaces are set in the TOML file only.
#[test]
fn rules_and_namespaces_not_from_env() {
    let (c, report) = Config::load_from(env(&[
        ("LATCHKEY_RATELIMIT__LOGIN_START__PER_IP__LIMIT", "5"),
        ("LATCHKEY_RATELIMIT__LOGIN_START", "{per_ip = {limit = 5, window = \"1m\"}}"),
        ("LATCHKEY_RATELIMIT__NAMESPACES", "[{name = \"api\", limit = 1, window = \"1s\"}]"),
    ]))
    .expect("load");
    assert_eq!(report.warnings.len(), 3, "{:?}", report.warnings);
    assert!(c.ratelimit.namespaces.is_empty());
    assert_eq!(c.ratelimit.login_start.per_ip, Some(Rule::new(300, 300)));
}

#[test]
fn production_refuses_weak_settings() {
    let no_password = Config::load_from(env(&[("LATCHKEY_ENV", "production")])).expect_err("refused");
    assert!(no_password.to_string().contains("master password"), "{no_password}");

    let weak = Config::load_from(env(&[("LATCHKEY_ENV", "production"), ("LATCHKEY_MASTER_PASSWORD", "short")]))
        .expect_err("refused");
    assert!(weak.to_string().contains("16"), "{weak}");

    let few = Config::load_from(env(&[
        ("LATCHKEY_ENV", "production"),
        ("LATCHKEY_MASTER_PASSWORD", "a long enough master password"),
        ("LATCHKEY_KEYRING__PBKDF2_ITERATIONS", "1000"),
    ]))
    .expect_err("refused");
    assert!(few.to_string().contains("600000"), "{few}");

    let (ok, _) = Config::load_from(env(&[
        ("LATCHKEY_ENV", "production"),
        ("LATCHKEY_MASTER_PASSWORD", "a long enough master password"),
    ]))
    .expect("valid production config");
    assert!(!ok.migrate_on_start(), "production migrates only when asked");
}

/// `.env.example` documents every variable (as derived from the defaults)
/// and no other, and its values load as-is.
#[test]
fn env_example_lists_every_variable_and_loads() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).expect("read");
    let mut listed = Vec::new();
    let mut active = Vec::new();
    for line in text.lines() {
        let (commented, body) = match line.strip_prefix("# ") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((name, value)) = body.split_once('=') else {
            continue;
        };
        let Some(key) = name.strip_prefix("LATCHKEY_") else {
            continue;
        };
        if name.contains(' ') {
            continue;
        }
        listed.push(key.to_ascii_lowercase());
        if !commented {
            active.push((name.to_owned(), value.to_owned()));
        }
    }
    let keys = env_keys().expect("keys");
    for key in keys.keys() {
        assert!(listed.contains(key), ".env.example lacks LATCHKEY_{}", key.to_uppercase());
    }
    for key in &listed {
        let secret_file = key.strip_suffix("_file").is_some_and(|k| keys.get(k) == Some(&Kind::Secret));
        assert!(
            keys.contains_key(key) || secret_file || key == "config",
            ".env.example lists LATCHKEY_{}, which is no setting",
            key.to_uppercase()
        );
    }
    let (config, report) = Config::load_from(active).expect(".env.example loads");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(config.keyring.rotate_after, Duration::from_secs(90 * 86400));
}

#[test]
fn ratelimit_namespaces_from_toml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[ratelimit.namespaces]]\nname = \"api\"\nlimit = 100\nwindow = \"60s\"\n\n\
         [ratelimit.login_start]\nper_ip = { limit = 7, window = \"1m\" }\n",
    )
    .expect("write");
    let (c, _) = Config::load_from(env(&[("LATCHKEY_CONFIG", path.to_str().expect("utf8"))])).expect("load");
    assert_eq!(c.ratelimit.namespaces.len(), 1);
    assert_eq!(c.ratelimit.namespaces[0].window, Duration::from_secs(60));
    assert_eq!(c.ratelimit.login_start.per_ip, Some(Rule::new(7, 60)));
    assert_eq!(c.ratelimit.login_start.per_username, None, "a section replaces the defaults it names");

    std::fs::write(&path, "[[ratelimit.namespaces]]\nname = \"api\"\nlimit = 0\nwindow = \"60s\"\n").expect("write");
    assert!(Config::load_from(env(&[("LATCHKEY_CONFIG", path.to_str().expect("utf8"))])).is_err());
}

#[test]
fn bad_values_are_clear_errors() {
    let err = Config::load_from(env(&[("LATCHKEY_TRUSTED_PROXIES", "not-a-net")])).expect_err("refused");
    assert!(err.to_string().contains("not-a-net"), "{err}");
    let err = Config::load_from(env(&[("LATCHKEY_ENV", "staging")])).expect_err("refused");
    assert!(err.to_string().contains("staging"), "{err}");
}

/// The derivation's exceptions name real keys, so none can go stale.
#[test]
fn file_only_keys_exist() {
    let defaults = Value::serialize(Config::default()).expect("serialize");
    for key in FILE_ONLY {
        assert!(defaults.find_ref(&key.replace("__", ".")).is_some(), "{key} is no key");
    }
}

/// Serialized configuration, like its `Debug`, never shows a secret.
#[test]
fn serialized_config_holds_no_secret() {
    let config = Config {
        database_url: Some(SecretString::from("postgres://u:hunter2@db/lk")),
        redis_url: Some(SecretString::from("redis://:hunter3@cache")),
        master_password: Some(SecretString::from("hunter4 master password")),
        service_tokens: vec![SecretString::from("hunter5")],
        ..Config::default()
    };
    let json = serde_json::to_string(&config).expect("serialize");
    let value = format!("{:?}", Value::serialize(&config).expect("serialize"));
    for text in [json, value] {
        assert!(!text.contains("hunter"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
