//! The keyring: Fernet spec vectors, master password checks, owner binding,
//! tampering, rotation and re-encryption, on Postgres and SQLite.

use chrono::{Duration as ChronoDuration, Utc};
use entity::{audit_events, data_keys, opaque_credentials, totp_credentials, users};
use latchkey::domain::Error;
use latchkey::domain::keyring::{Keyring, Owner, RotationPolicy, Sealed, SealedColumn};
use latchkey::store::db::Db;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use secrecy::SecretString;
use uuid::Uuid;

use crate::each_db;
use crate::helpers::{DbKind, TEST_MASTER_PASSWORD, TEST_PBKDF2_ITERATIONS, TestDb};

const POLICY: RotationPolicy =
    RotationPolicy { max_age: std::time::Duration::from_secs(90 * 86400), max_uses: 1_000_000 };

async fn open(db: &Db, password: &str, policy: RotationPolicy) -> Result<Keyring, Error> {
    Keyring::open(db.clone(), &SecretString::from(password), TEST_PBKDF2_ITERATIONS, policy, Utc::now()).await
}

async fn key_count(db: &Db) -> u64 {
    data_keys::Entity::find().count(db.conn()).await.expect("count")
}

async fn insert_user(db: &Db) -> Uuid {
    let id = Uuid::new_v4();
    let now = Utc::now();
    users::Entity::insert(users::ActiveModel {
        id: Set(id),
        username: Set(format!("user-{}", id.simple())),
        created_at: Set(now),
        updated_at: Set(now),
        locked_until: Set(None),
        lock_reason: Set(None),
        failed_attempts: Set(0),
        last_failure_at: Set(None),
    })
    .exec_without_returning(db.conn())
    .await
    .expect("insert user");
    id
}

/// Stores sealed values in three different encrypted columns for one user.
async fn insert_sealed_rows(db: &Db, keyring: &Keyring, user: Uuid) {
    let now = Utc::now();
    let record = keyring.seal(SealedColumn::OpaqueRecord, Owner::User(user), b"record", now).await.expect("seal");
    opaque_credentials::Entity::insert(opaque_credentials::ActiveModel {
        user_id: Set(user),
        key_id: Set(record.key_id),
        ciphertext: Set(record.ciphertext),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(db.conn())
    .await
    .expect("insert credential");
    let totp = keyring.seal(SealedColumn::TotpSecret, Owner::User(user), b"totp", now).await.expect("seal");
    totp_credentials::Entity::insert(totp_credentials::ActiveModel {
        user_id: Set(user),
        key_id: Set(totp.key_id),
        ciphertext: Set(totp.ciphertext),
        confirmed_at: Set(None),
        last_used_step: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(db.conn())
    .await
    .expect("insert totp");
    let details = keyring.seal(SealedColumn::AuditDetails, Owner::User(user), b"{}", now).await.expect("seal");
    audit_events::Entity::insert(audit_events::ActiveModel {
        occurred_at: Set(now),
        event: Set("test.event".into()),
        user_id: Set(Some(user)),
        session_id: Set(None),
        device_id: Set(None),
        ip: Set(None),
        outcome: Set("success".into()),
        details_key_id: Set(Some(details.key_id)),
        details: Set(Some(details.ciphertext)),
        prev_hash: Set("0".repeat(64)),
        hash: Set(Uuid::new_v4().simple().to_string()),
        ..Default::default()
    })
    .exec_without_returning(db.conn())
    .await
    .expect("insert audit");
}

async fn opaque_row(db: &Db, user: Uuid) -> Sealed {
    let row = opaque_credentials::Entity::find_by_id(user).one(db.conn()).await.expect("query").expect("row");
    Sealed { key_id: row.key_id, ciphertext: row.ciphertext }
}

async fn wrong_master_password_is_refused_and_creates_nothing(kind: DbKind) {
    let test_db = TestDb::new(kind).await;
    let db = test_db.connect().await;
    let keyring = open(&db, TEST_MASTER_PASSWORD, POLICY).await.expect("first open creates the keyring");
    assert_eq!(key_count(&db).await, 1);
    drop(keyring);

    let err = open(&db, "not the master password", POLICY).await.expect_err("wrong password");
    assert!(matches!(err, Error::WrongMasterPassword), "{err:?}");
    assert!(err.to_string().contains("master password"), "{err}");
    assert_eq!(key_count(&db).await, 1, "a wrong password never creates keys");

    open(&db, TEST_MASTER_PASSWORD, POLICY).await.expect("the right password still opens it");
    assert_eq!(key_count(&db).await, 1);
}
each_db!(wrong_master_password_on, wrong_master_password_is_refused_and_creates_nothing);

async fn seal_binds_owner_and_column_and_detects_tampering(kind: DbKind) {
    let test_db = TestDb::new(kind).await;
    let db = test_db.connect().await;
    let keyring = open(&db, TEST_MASTER_PASSWORD, POLICY).await.expect("open");
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let sealed = keyring
        .seal(SealedColumn::TotpSecret, Owner::User(alice), b"JBSWY3DPEHPK3PXP", Utc::now())
        .await
        .expect("seal");
    assert!(!sealed.ciphertext.contains("JBSWY3DPEHPK3PXP"));
    assert_eq!(
        *keyring.open_sealed(SealedColumn::TotpSecret, Owner::User(alice), &sealed).await.expect("opens"),
        b"JBSWY3DPEHPK3PXP"
    );

    // Copied into another user's row, or another column: refused.
    let copied = keyring.open_sealed(SealedColumn::TotpSecret, Owner::User(bob), &sealed).await;
    assert!(matches!(copied, Err(Error::Integrity(_))), "{copied:?}");
    let moved = keyring.open_sealed(SealedColumn::OpaqueRecord, Owner::User(alice), &sealed).await;
    assert!(matches!(moved, Err(Error::Integrity(_))), "{moved:?}");

    // Every single flipped character of the token fails cleanly (no panic).
    for i in [0, 10, sealed.ciphertext.len() / 2, sealed.ciphertext.len() - 2] {
        let mut bytes = sealed.ciphertext.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = Sealed { key_id: sealed.key_id, ciphertext: String::from_utf8(bytes).expect("ascii") };
        let result = keyring.open_sealed(SealedColumn::TotpSecret, Owner::User(alice), &tampered).await;
        assert!(matches!(result, Err(Error::Integrity(_))), "flip at {i}: {result:?}");
    }
    for garbage in ["", "not base64 at all!", "gAAAAA"] {
        let result = keyring
            .open_sealed(
                SealedColumn::TotpSecret,
                Owner::User(alice),
                &Sealed { key_id: sealed.key_id, ciphertext: garbage.into() },
            )
            .await;
        assert!(matches!(result, Err(Error::Integrity(_))), "{garbage:?}: {result:?}");
    }
    let unknown_key = Sealed { key_id: Uuid::new_v4(), ciphertext: sealed.ciphertext.clone() };
    assert!(matches!(
        keyring.open_sealed(SealedColumn::TotpSecret, Owner::User(alice), &unknown_key).await,
        Err(Error::Integrity(_))
    ));
}
each_db!(seal_binds_owner_and_column_on, seal_binds_owner_and_column_and_detects_tampering);

async fn rotation_by_demand_use_count_and_age(kind: DbKind) {
    let test_db = TestDb::new(kind).await;
    let db = test_db.connect().await;
    let policy = RotationPolicy { max_age: std::time::Duration::from_secs(90 * 86400), max_uses: 3 };
    let keyring = open(&db, TEST_MASTER_PASSWORD, policy).await.expect("open");
    let now = Utc::now();
    let owner = Owner::User(Uuid::new_v4());

    let first = keyring.status(now).await.expect("status").active_key_id.expect("active key");
    let a = keyring.seal(SealedColumn::OpaqueRecord, owner, b"a", now).await.expect("seal");
    assert_eq!(a.key_id, first);

    // On demand.
    let second = keyring.rotate(now).await.expect("rotate");
    assert_ne!(second, first);
    let status = keyring.status(now).await.expect("status");
    assert_eq!(status.active_key_id, Some(second));
    let states: Vec<_> = status.keys.iter().map(|k| (k.key_id, k.state)).collect();
    assert!(states.contains(&(first, "decrypt_only")), "{states:?}");
    assert_eq!(*keyring.open_sealed(SealedColumn::OpaqueRecord, owner, &a).await.expect("old key decrypts"), b"a");

    // By use count: the fourth seal under a key with 3 uses rotates first.
    for _ in 0..3 {
        assert_eq!(keyring.seal(SealedColumn::OpaqueRecord, owner, b"x", now).await.expect("seal").key_id, second);
    }
    let third = keyring.seal(SealedColumn::OpaqueRecord, owner, b"x", now).await.expect("seal").key_id;
    assert_ne!(third, second, "use count triggered rotation");
    let used = keyring.status(now).await.expect("status").keys.into_iter().find(|k| k.key_id == second).expect("key");
    assert_eq!(used.use_count, 3);

    // By age, from the background check, with the clock moved forward.
    assert_eq!(keyring.rotate_if_due(now).await.expect("not due"), None);
    let later = now + ChronoDuration::days(91);
    let fourth = keyring.rotate_if_due(later).await.expect("due").expect("rotated");
    assert_ne!(fourth, third);

    // Exactly one active key, always.
    let active = keyring.status(later).await.expect("status").keys.iter().filter(|k| k.state == "active").count();
    assert_eq!(active, 1);
}
each_db!(rotation_on, rotation_by_demand_use_count_and_age);

async fn concurrent_rotations_leave_one_active_key(kind: DbKind) {
    let test_db = TestDb::new(kind).await;
    let db = test_db.connect().await;
    let keyring = std::sync::Arc::new(open(&db, TEST_MASTER_PASSWORD, POLICY).await.expect("open"));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let keyring = keyring.clone();
            tokio::spawn(async move { keyring.rotate(Utc::now()).await })
        })
        .collect();
    for task in tasks {
        // SQLite may refuse a concurrent writer ("database is locked"), which
        // is an error, never a second active key.
        let _ = task.await.expect("join");
    }
    let active =
        data_keys::Entity::find().filter(data_keys::Column::State.eq("active")).count(db.conn()).await.expect("count");
    assert_eq!(active, 1);
}
each_db!(concurrent_rotations_on, concurrent_rotations_leave_one_active_key);

async fn reencryption_moves_every_row_and_retires_old_keys(kind: DbKind) {
    let test_db = TestDb::new(kind).await;
    let db = test_db.connect().await;
    let keyring = open(&db, TEST_MASTER_PASSWORD, POLICY).await.expect("open");
    let now = Utc::now();
    let server_setup = latchkey::domain::server_setup::load_or_create(&db, &keyring, now).await.expect("setup");
    let old = keyring.status(now).await.expect("status").active_key_id.expect("active");
    let mut users_ = Vec::new();
    for _ in 0..5 {
        let user = insert_user(&db).await;
        insert_sealed_rows(&db, &keyring, user).await;
        users_.push(user);
    }
    let rows_on_old = keyring.status(now).await.expect("status").keys[0].rows;
    assert_eq!(rows_on_old, 5 * 3 + 1, "three columns per user plus the server setup");

    let new = keyring.rotate(now).await.expect("rotate");
    // Batches of 2: several batches per column, as an interrupted job resumes.
    let report = keyring.reencrypt(2, now).await.expect("reencrypt");
    assert_eq!(report.moved, 11, "credentials, TOTP secrets and the server setup move");
    assert_eq!(report.failed, 0);
    assert!(report.retired.is_empty(), "nothing is retired right after a rotation");

    // Audit details stay where the hash chain recorded them, so their key
    // stays decrypt-only, even after the grace period.
    let later = now + chrono::Duration::minutes(10);
    assert!(keyring.reencrypt(2, later).await.expect("again").retired.is_empty());
    let status = keyring.status(later).await.expect("status");
    for key in &status.keys {
        if key.key_id == old {
            assert_eq!((key.state, key.rows), ("decrypt_only", 5));
        } else {
            assert_eq!((key.key_id, key.state, key.rows), (new, "active", 11));
        }
    }
    // Everything still decrypts, under the new key.
    for user in &users_ {
        let sealed = opaque_row(&db, *user).await;
        assert_eq!(sealed.key_id, new);
        assert_eq!(
            *keyring.open_sealed(SealedColumn::OpaqueRecord, Owner::User(*user), &sealed).await.expect("opens"),
            b"record"
        );
    }
    let reloaded = latchkey::domain::server_setup::load_or_create(&db, &keyring, now).await.expect("setup");
    assert_eq!(reloaded.serialize(), server_setup.serialize(), "the server setup survives re-encryption unchanged");

    // A second run has nothing to do.
    assert_eq!(keyring.reencrypt(2, later).await.expect("again"), Default::default());

    // A key no row uses is retired once the grace period is over.
    let newer = keyring.rotate(later).await.expect("rotate");
    let much_later = later + chrono::Duration::minutes(10);
    let report = keyring.reencrypt(100, much_later).await.expect("reencrypt");
    assert_eq!((report.moved, report.retired.clone()), (11, vec![new]));
    let status = keyring.status(much_later).await.expect("status");
    assert_eq!(status.active_key_id, Some(newer));
    assert!(status.keys.iter().any(|k| k.key_id == new && k.state == "retired"));
}
each_db!(reencryption_on, reencryption_moves_every_row_and_retires_old_keys);

async fn reencryption_skips_a_corrupt_row_and_keeps_its_key(kind: DbKind) {
    let test_db = TestDb::new(kind).await;
    let db = test_db.connect().await;
    let keyring = open(&db, TEST_MASTER_PASSWORD, POLICY).await.expect("open");
    let now = Utc::now();
    let old = keyring.status(now).await.expect("status").active_key_id.expect("active");
    let (good, bad) = (insert_user(&db).await, insert_user(&db).await);
    insert_sealed_rows(&db, &keyring, good).await;
    insert_sealed_rows(&db, &keyring, bad).await;
    // Copy good's credential ciphertext into bad's row: owner binding breaks it.
    let stolen = opaque_row(&db, good).await;
    opaque_credentials::Entity::update_many()
        .col_expr(opaque_credentials::Column::Ciphertext, sea_orm::sea_query::Expr::val(stolen.ciphertext))
        .filter(opaque_credentials::Column::UserId.eq(bad))
        .exec(db.conn())
        .await
        .expect("tamper");

    keyring.rotate(now).await.expect("rotate");
    let report = keyring.reencrypt(10, now + chrono::Duration::minutes(10)).await.expect("reencrypt");
    assert_eq!(report.failed, 1);
    assert_eq!(report.moved, 3, "good's credential and TOTP secret, bad's TOTP secret");
    assert!(report.retired.is_empty(), "a key still used by a row is never retired");
    let status = keyring.status(now).await.expect("status");
    let old_status = status.keys.iter().find(|k| k.key_id == old).expect("old key");
    assert_eq!((old_status.state, old_status.rows), ("decrypt_only", 3), "the corrupt row and two audit rows");
    assert_eq!(opaque_row(&db, bad).await.key_id, old, "the corrupt row is left untouched");
}
each_db!(reencryption_corrupt_row_on, reencryption_skips_a_corrupt_row_and_keeps_its_key);

async fn server_setup_is_created_once_and_stored_sealed(kind: DbKind) {
    let test_db = TestDb::new(kind).await;
    let db = test_db.connect().await;
    let keyring = open(&db, TEST_MASTER_PASSWORD, POLICY).await.expect("open");
    let first = latchkey::domain::server_setup::load_or_create(&db, &keyring, Utc::now()).await.expect("create");
    // A second replica (a second keyring handle on the same database) loads the same setup.
    let other = open(&db, TEST_MASTER_PASSWORD, POLICY).await.expect("open again");
    let second = latchkey::domain::server_setup::load_or_create(&db, &other, Utc::now()).await.expect("load");
    assert_eq!(first.serialize(), second.serialize());
    let row = entity::server_setup::Entity::find_by_id(1).one(db.conn()).await.expect("query").expect("row");
    assert_eq!(first.serialize().len(), 128);
    assert!(!row.ciphertext.is_empty());
}
each_db!(server_setup_on, server_setup_is_created_once_and_stored_sealed);

mod fernet_spec {
    //! The Fernet specification's test vectors (tests/data/fernet), through
    //! the `fernet` crate the keyring uses.
    use base64::Engine as _;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vector {
        token: String,
        now: String,
        secret: String,
        #[serde(default)]
        src: Option<String>,
        #[serde(default)]
        iv: Option<Vec<u8>>,
        #[serde(default)]
        ttl_sec: Option<u64>,
        #[serde(default)]
        desc: Option<String>,
    }

    fn load(name: &str) -> Vec<Vector> {
        let path = format!("{}/tests/data/fernet/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("vector json")
    }

    fn unix(now: &str) -> u64 {
        u64::try_from(chrono::DateTime::parse_from_rfc3339(now).expect("time").timestamp()).expect("after 1970")
    }

    #[test]
    fn generate_vectors_decode_to_their_parts() {
        // The crate draws its IV internally, so a token cannot be generated
        // with the vector's IV; check instead that the vector's token is
        // exactly version || timestamp || IV || ciphertext || HMAC of those
        // inputs, and decrypts to the source.
        for v in load("generate.json") {
            let f = fernet::Fernet::new(&v.secret).expect("key");
            let plain = f.decrypt_at_time(&v.token, None, unix(&v.now)).expect("decrypts");
            assert_eq!(plain, v.src.as_deref().expect("src").as_bytes());
            let raw = base64::engine::general_purpose::URL_SAFE.decode(&v.token).expect("base64");
            assert_eq!(raw[0], 0x80);
            assert_eq!(u64::from_be_bytes(raw[1..9].try_into().expect("8 bytes")), unix(&v.now));
            assert_eq!(&raw[9..25], v.iv.as_deref().expect("iv"));
        }
    }

    #[test]
    fn verify_vectors_decrypt() {
        for v in load("verify.json") {
            let f = fernet::Fernet::new(&v.secret).expect("key");
            let plain = f.decrypt_at_time(&v.token, v.ttl_sec, unix(&v.now)).expect("decrypts");
            assert_eq!(plain, v.src.as_deref().expect("src").as_bytes());
        }
    }

    #[test]
    fn invalid_vectors_are_refused_without_panicking() {
        let vectors = load("invalid.json");
        assert_eq!(vectors.len(), 8);
        for v in vectors {
            let f = fernet::Fernet::new(&v.secret).expect("key");
            let result = f.decrypt_at_time(&v.token, v.ttl_sec, unix(&v.now));
            assert!(result.is_err(), "{} must be refused", v.desc.as_deref().unwrap_or("?"));
        }
    }
}
