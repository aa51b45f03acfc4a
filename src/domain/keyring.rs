//! The keyring: every secret at rest is encrypted under a data key, and data
//! keys are wrapped by a key-encryption key (KEK) derived from the master
//! password.
//!
//! ```text
//! master password --PBKDF2-HMAC-SHA256(salt, n)--> KEK (Fernet key)
//!   KEK encrypts: the canary (proves the password at start-up)
//!                 every data key (random Fernet keys)
//! data key encrypts: envelope(purpose, owner, plaintext) -> Fernet token
//! ```
//!
//! Key life cycle:
//!
//! ```text
//!            rotate (age, use count, on demand)       no row uses it
//!  active ---------------------------------> decrypt-only -----------> retired
//! ```
//!
//! Exactly one key is active. Rotation is a compare-and-set on the active
//! row, so two replicas rotating at once create one new key, not two. The
//! re-encryption job walks every sealed column in primary-key order, moving
//! rows off non-active keys in batches; each row is a compare-and-set on its
//! key id, so the job can be interrupted and resumed, and races with normal
//! writes harmlessly. A key is retired only once no row of any column uses it.
//!
//! The envelope binds each plaintext to its column ("purpose") and its row
//! owner, so a ciphertext copied into another user's row, or into another
//! column, fails to decrypt. Fernet TTLs are never used: data at rest does not
//! expire, and the `fernet` crate overflows on far-future timestamps with one.
//!
//! A wrong master password fails on the canary before anything is written:
//! it never creates keys.
//!
//! Key material in memory is wiped when dropped: the raw KEK and the subkeys
//! are `Zeroizing`, the `fernet` crate zeroizes its keys, and the buffers a
//! data key or a plaintext passes through on its way in or out are
//! `Zeroizing` too. Nothing here prints a key in `Debug` output.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use chrono::{DateTime, Utc};
use fernet::Fernet;
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{Error, Result};
use crate::store::db::Db;
use crate::store::keyring::{self as store, DataKey, KeyState, KeyringMeta};

pub use crate::store::keyring::{Owner, SealedColumn};

const KDF_NAME: &str = "pbkdf2-hmac-sha256";
const CANARY: &[u8] = b"latchkey keyring canary v1";
const ENVELOPE_VERSION: u8 = 1;
/// How long after a rotation the previous keys may be retired.
pub const RETIRE_GRACE: Duration = Duration::from_secs(120);

/// When the active key is replaced automatically.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    pub max_age: Duration,
    pub max_uses: u64,
}

/// A value encrypted under a data key: what an encrypted column stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: Uuid,
    pub ciphertext: String,
}

/// One data key as shown by `keys status` and the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyStatus {
    pub key_id: Uuid,
    pub state: &'static str,
    pub created_at: DateTime<Utc>,
    pub age_days: i64,
    pub use_count: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyringStatus {
    pub active_key_id: Option<Uuid>,
    pub kdf: String,
    pub kdf_iterations: u32,
    pub keys: Vec<KeyStatus>,
}

/// What one run of the re-encryption job did.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct ReencryptReport {
    pub moved: u64,
    /// Rows whose ciphertext failed authentication (left untouched, logged).
    pub failed: u64,
    pub retired: Vec<Uuid>,
}

/// A 256-bit key for one purpose, from [`Keyring::subkey`]. It reads as a
/// byte slice, is wiped when dropped, and its `Debug` does not show it.
pub struct Subkey(Zeroizing<[u8; 32]>);

impl Subkey {
    /// The key as an array, for APIs that take a fixed-size key.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::ops::Deref for Subkey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl std::fmt::Debug for Subkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subkey(..)")
    }
}

pub struct Keyring {
    db: Db,
    kek: Fernet,
    /// Raw KEK bytes, only to derive purpose-specific subkeys.
    kek_raw: Zeroizing<[u8; 32]>,
    iterations: u32,
    policy: RotationPolicy,
    /// Unwrapped data keys by id. Keys are immutable once created, so a
    /// cached key never goes stale; a key created by another replica is
    /// loaded on first use.
    cache: RwLock<HashMap<Uuid, Arc<Fernet>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the keyring stored in the database, creating it on first use.
    /// Fails with [`Error::WrongMasterPassword`] when the password does not
    /// open an existing keyring; nothing is written in that case.
    pub async fn open(
        db: Db,
        master_password: &SecretString,
        new_keyring_iterations: u32,
        policy: RotationPolicy,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let meta = match store::load_meta(&db).await? {
            Some(meta) => meta,
            None => match Self::initialize(&db, master_password, new_keyring_iterations, now).await {
                Ok(meta) => meta,
                // Another replica initialised it first: open theirs.
                Err(Error::Conflict(_)) => store::load_meta(&db)
                    .await?
                    .ok_or_else(|| Error::Internal("keyring vanished after a concurrent creation".into()))?,
                Err(e) => return Err(e),
            },
        };
        if meta.kdf != KDF_NAME {
            return Err(Error::Internal(format!("keyring uses unknown KDF {:?}", meta.kdf)));
        }
        let salt =
            STANDARD.decode(&meta.kdf_salt).map_err(|_| Error::Integrity("keyring salt is not base64".into()))?;
        let (kek, kek_raw) = derive_kek(master_password, salt, meta.kdf_iterations).await?;
        match kek.decrypt(&meta.canary) {
            Ok(plain) if plain == CANARY => {}
            _ => return Err(Error::WrongMasterPassword),
        }
        Ok(Self { db, kek, kek_raw, iterations: meta.kdf_iterations, policy, cache: RwLock::new(HashMap::new()) })
    }

    async fn initialize(
        db: &Db,
        master_password: &SecretString,
        iterations: u32,
        now: DateTime<Utc>,
    ) -> Result<KeyringMeta> {
        let mut salt = vec![0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let (kek, _) = derive_kek(master_password, salt.clone(), iterations).await?;
        let meta = KeyringMeta {
            kdf: KDF_NAME.to_owned(),
            kdf_salt: STANDARD.encode(&salt),
            kdf_iterations: iterations,
            canary: kek.encrypt(CANARY),
            created_at: now,
        };
        let first = new_data_key(&kek, now);
        store::initialize(db, &meta, &first).await?;
        tracing::info!(key_id = %first.id, "created a new keyring");
        Ok(meta)
    }

    /// PBKDF2 iterations of the stored keyring.
    pub fn kdf_iterations(&self) -> u32 {
        self.iterations
    }

    /// A 256-bit key for one purpose (HMAC-SHA256 of the label under the
    /// KEK): stable across replicas and data-key rotations, and distinct per
    /// label, so no key serves two purposes.
    pub fn subkey(&self, label: &str) -> Subkey {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(self.kek_raw.as_slice())
            .expect("HMAC takes keys of any length");
        mac.update(b"latchkey subkey v1\0");
        mac.update(label.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&mac.finalize().into_bytes());
        Subkey(key)
    }

    /// Encrypts `plaintext` for `column` of the row owned by `owner` under the
    /// active key, rotating first if the policy says so.
    pub async fn seal(
        &self,
        column: SealedColumn,
        owner: Owner,
        plaintext: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Sealed> {
        let active = self.active_for_writing(now).await?;
        store::add_uses(&self.db, active.id, 1).await?;
        let fernet = self.fernet(&active)?;
        Ok(Sealed { key_id: active.id, ciphertext: fernet.encrypt(&envelope(column, owner, plaintext)) })
    }

    /// Decrypts a sealed value, checking that it was sealed for this column
    /// and owner. Any failure is an integrity error: stored ciphertext never
    /// fails for an innocent reason.
    pub async fn open_sealed(&self, column: SealedColumn, owner: Owner, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        let fernet = self.fernet_by_id(sealed.key_id).await?;
        let plain = Zeroizing::new(fernet.decrypt(&sealed.ciphertext).map_err(|_| {
            Error::Integrity(format!("{} ciphertext failed authentication under key {}", column.table(), sealed.key_id))
        })?);
        open_envelope(column, owner, &plain)
    }

    /// Makes a new active key now; the previous one becomes decrypt-only.
    pub async fn rotate(&self, now: DateTime<Utc>) -> Result<Uuid> {
        let active = self.active().await?;
        self.rotate_from(&active, now).await
    }

    /// Replaces `expected` if it is still the active key; if another writer
    /// replaced it first, their key stands (so N concurrent rotations of a
    /// due key make one new key, not N).
    async fn rotate_from(&self, expected: &DataKey, now: DateTime<Utc>) -> Result<Uuid> {
        let next = new_data_key(&self.kek, now);
        if store::rotate(&self.db, expected.id, &next).await? {
            tracing::info!(old_key_id = %expected.id, new_key_id = %next.id, "rotated the data key");
            return Ok(next.id);
        }
        Ok(self.active().await?.id)
    }

    /// Rotates if the active key is too old or too used.
    pub async fn rotate_if_due(&self, now: DateTime<Utc>) -> Result<Option<Uuid>> {
        let active = self.active().await?;
        if self.is_due(&active, now) { self.rotate_from(&active, now).await.map(Some) } else { Ok(None) }
    }

    /// Moves every sealed row onto the active key, `batch` rows at a time,
    /// then retires decrypt-only keys that no row uses any more.
    pub async fn reencrypt(&self, batch: u64, now: DateTime<Utc>) -> Result<ReencryptReport> {
        let mut report = ReencryptReport::default();
        let active = self.active().await?;
        let active_fernet = self.fernet(&active)?;
        for column in SealedColumn::REENCRYPTED {
            let mut after = None;
            loop {
                let rows = store::sealed_batch(&self.db, column, active.id, after.as_ref(), batch).await?;
                let Some(last) = rows.last() else { break };
                after = Some(last.pk.clone());
                let mut moved = 0;
                for row in &rows {
                    let sealed = Sealed { key_id: row.key_id, ciphertext: row.ciphertext.clone() };
                    let plain = match self.open_sealed(column, row.owner, &sealed).await {
                        Ok(plain) => plain,
                        Err(e) => {
                            tracing::error!(table = column.table(), error = %e, "re-encryption skipped a row");
                            metrics::counter!("latchkey_integrity_errors_total", "table" => column.table())
                                .increment(1);
                            report.failed += 1;
                            continue;
                        }
                    };
                    let ciphertext = active_fernet.encrypt(&envelope(column, row.owner, &plain));
                    if store::reseal(&self.db, row, active.id, &ciphertext).await? {
                        moved += 1;
                    }
                }
                store::add_uses(&self.db, active.id, moved).await?;
                report.moved += moved;
            }
        }
        // A value sealed just before the last rotation may still be on its
        // way into its row: retire nothing until the active key has been
        // active for a while.
        if now - active.created_at < chrono::Duration::from_std(RETIRE_GRACE).unwrap_or_default() {
            return Ok(report);
        }
        let usage = store::rows_per_key(&self.db).await?;
        for key in store::keys(&self.db).await? {
            if key.state == KeyState::DecryptOnly
                && usage.get(&key.id).copied().unwrap_or(0) == 0
                && store::retire(&self.db, key.id, now).await?
            {
                self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key.id);
                tracing::info!(key_id = %key.id, "retired a data key no row uses");
                report.retired.push(key.id);
            }
        }
        if report.moved > 0 || !report.retired.is_empty() {
            tracing::info!(
                moved = report.moved,
                failed = report.failed,
                retired = report.retired.len(),
                "re-encryption"
            );
        }
        Ok(report)
    }

    pub async fn status(&self, now: DateTime<Utc>) -> Result<KeyringStatus> {
        let usage = store::rows_per_key(&self.db).await?;
        let keys = store::keys(&self.db).await?;
        Ok(KeyringStatus {
            active_key_id: keys.iter().find(|k| k.state == KeyState::Active).map(|k| k.id),
            kdf: KDF_NAME.to_owned(),
            kdf_iterations: self.iterations,
            keys: keys
                .into_iter()
                .map(|k| KeyStatus {
                    key_id: k.id,
                    state: k.state.as_str(),
                    created_at: k.created_at,
                    age_days: (now - k.created_at).num_days(),
                    use_count: k.use_count,
                    rows: usage.get(&k.id).copied().unwrap_or(0),
                })
                .collect(),
        })
    }

    fn is_due(&self, key: &DataKey, now: DateTime<Utc>) -> bool {
        let age = (now - key.created_at).to_std().unwrap_or_default();
        age >= self.policy.max_age || key.use_count >= self.policy.max_uses
    }

    async fn active(&self) -> Result<DataKey> {
        store::active_key(&self.db).await?.ok_or_else(|| Error::Internal("the keyring has no active key".into()))
    }

    async fn active_for_writing(&self, now: DateTime<Utc>) -> Result<DataKey> {
        let active = self.active().await?;
        if !self.is_due(&active, now) {
            return Ok(active);
        }
        self.rotate_from(&active, now).await?;
        self.active().await
    }

    fn fernet(&self, key: &DataKey) -> Result<Arc<Fernet>> {
        if let Some(f) = self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key.id) {
            return Ok(f.clone());
        }
        let unwrapped = Zeroizing::new(
            self.kek
                .decrypt(&key.wrapped_key)
                .map_err(|_| Error::Integrity(format!("data key {} does not unwrap under this KEK", key.id)))?,
        );
        let encoded = std::str::from_utf8(&unwrapped)
            .map_err(|_| Error::Integrity(format!("data key {} is malformed", key.id)))?;
        let fernet = Arc::new(
            Fernet::new(encoded).ok_or_else(|| Error::Integrity(format!("data key {} is malformed", key.id)))?,
        );
        self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.id, fernet.clone());
        Ok(fernet)
    }

    async fn fernet_by_id(&self, id: Uuid) -> Result<Arc<Fernet>> {
        if let Some(f) = self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id) {
            return Ok(f.clone());
        }
        let key = store::key(&self.db, id).await?.ok_or_else(|| Error::Integrity(format!("unknown data key {id}")))?;
        if key.state == KeyState::Retired {
            return Err(Error::Integrity(format!("data key {id} is retired")));
        }
        self.fernet(&key)
    }
}

/// PBKDF2 is deliberately slow: run it off the async executor.
async fn derive_kek(
    master_password: &SecretString,
    salt: Vec<u8>,
    iterations: u32,
) -> Result<(Fernet, Zeroizing<[u8; 32]>)> {
    let password = master_password.clone();
    let span = tracing::Span::current();
    let key = tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let mut key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<pbkdf2::sha2::Sha256>(
            password.expose_secret().as_bytes(),
            &salt,
            iterations,
            key.as_mut_slice(),
        );
        key
    })
    .await
    .map_err(|e| Error::Internal(format!("key derivation task failed: {e}")))?;
    let encoded = Zeroizing::new(URL_SAFE.encode(key.as_slice()));
    let fernet = Fernet::new(&encoded).ok_or_else(|| Error::Internal("derived key has the wrong size".into()))?;
    Ok((fernet, key))
}

fn new_data_key(kek: &Fernet, now: DateTime<Utc>) -> DataKey {
    DataKey {
        id: Uuid::now_v7(),
        wrapped_key: kek.encrypt(Zeroizing::new(Fernet::generate_key()).as_bytes()),
        state: KeyState::Active,
        use_count: 0,
        created_at: now,
        retired_at: None,
    }
}

/// `version || len || purpose || len || owner || plaintext`.
fn envelope(column: SealedColumn, owner: Owner, plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let purpose = column.purpose().as_bytes();
    let owner = owner.binding();
    // Sized up front: a reallocation would leave a copy of the plaintext behind.
    let mut out = Zeroizing::new(Vec::with_capacity(3 + purpose.len() + owner.len() + plaintext.len()));
    out.push(ENVELOPE_VERSION);
    out.push(u8::try_from(purpose.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(purpose);
    out.push(u8::try_from(owner.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&owner);
    out.extend_from_slice(plaintext);
    out
}

fn open_envelope(column: SealedColumn, owner: Owner, plain: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let expected = envelope(column, owner, &[]);
    if plain.len() < expected.len() || plain[..expected.len()] != expected[..] {
        return Err(Error::Integrity(format!("{} ciphertext was sealed for another row or column", column.table())));
    }
    Ok(Zeroizing::new(plain[expected.len()..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_binds_column_and_owner() {
        let alice = Owner::User(Uuid::from_u128(1));
        let bob = Owner::User(Uuid::from_u128(2));
        let sealed = envelope(SealedColumn::TotpSecret, alice, b"secret");
        assert_eq!(*open_envelope(SealedColumn::TotpSecret, alice, &sealed).expect("opens"), b"secret");
        assert!(open_envelope(SealedColumn::TotpSecret, bob, &sealed).is_err());
        assert!(open_envelope(SealedColumn::OpaqueRecord, alice, &sealed).is_err());
        assert!(open_envelope(SealedColumn::TotpSecret, Owner::System, &sealed).is_err());
        assert!(open_envelope(SealedColumn::TotpSecret, alice, &[1]).is_err());
    }
}
