//! Everything a test app stored, as text, for tests of what is kept at rest.

use latchkey::store::Fast;
use latchkey::store::db::Db;

/// Every row of every table, as text (Debug of the models).
pub async fn dump_database(db: &Db) -> String {
    use entity::*;
    use sea_orm::EntityTrait as _;
    let c = db.conn();
    let mut out = String::new();
    macro_rules! dump {
        ($($m:ident),*) => {$(
            for row in $m::Entity::find().all(c).await.expect("rows") {
                out.push_str(&format!("{row:?}\n"));
            }
        )*};
    }
    dump!(
        users,
        user_roles,
        opaque_credentials,
        totp_credentials,
        recovery_codes,
        devices,
        sessions,
        refresh_tokens,
        audit_events,
        keyring,
        data_keys,
        server_setup,
        webauthn_credentials
    );
    out
}

/// Every key and value under the prefix, as text.
pub async fn dump_cache(fast: &Fast, prefix: &str) -> String {
    let mut out = String::new();
    for (key, value) in match fast {
        Fast::Redis(redis) => redis.dump_prefix(prefix).await.expect("dump"),
        Fast::Memory(memory) => memory.snapshot(),
    } {
        out.push_str(&key);
        out.push(' ');
        out.push_str(&String::from_utf8_lossy(&value));
        out.push('\n');
    }
    out
}
