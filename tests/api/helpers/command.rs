//! The `latchkey` binary run as an operator runs it, on a test database.

use std::process::{Command, Output};

use super::TestDb;

/// Runs `latchkey ARGS` on `db` with a clean environment.
pub fn latchkey(db: &TestDb, data_dir: &std::path::Path, password: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .env_clear()
        .env("LATCHKEY_DATABASE_URL", &db.url)
        .env("LATCHKEY_DATA_DIR", data_dir)
        .env("LATCHKEY_MASTER_PASSWORD", password)
        .env("LATCHKEY_KEYRING__PBKDF2_ITERATIONS", "1000")
        .env("LATCHKEY_BIND", "127.0.0.1:0")
        .output()
        .expect("run latchkey")
}
