//! What the fast store holds is sealed, so that a Redis reader (a leaked
//! dump, a replica, a shared instance) gets nothing that logs anyone in
//! (SPEC §3 "Redis is not trusted with secrets").
//!
//! - Login, registration and MFA state: XChaCha20-Poly1305 under a
//!   keyring-derived key, with the Redis key as associated data, so a value
//!   moved to another key does not open either. A random 24-byte nonce per
//!   value. Layout: `nonce || ciphertext+tag`.
//! - Session-cache entries: readable, but carry an HMAC-SHA256 over the
//!   Redis key and the entry, so a forged or altered entry is refused and
//!   the session is read from the database instead.
//!
//! Both keys derive from the key-encryption key (the master password), so
//! every replica holds them and nothing stores them.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::Mac as _;
use rand::RngCore as _;
use zeroize::Zeroizing;

use super::keyring::Keyring;

const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub struct FastSeal {
    aead: XChaCha20Poly1305,
    /// Keyed once: each MAC clones this state instead of re-keying
    /// (whoami checks one per request).
    mac: HmacSha256,
}

impl FastSeal {
    pub fn new(keyring: &Keyring) -> Self {
        let aead_key = keyring.subkey("fast-store-seal");
        Self {
            aead: XChaCha20Poly1305::new_from_slice(&aead_key).expect("a 32-byte key"),
            mac: <HmacSha256 as hmac::Mac>::new_from_slice(&keyring.subkey("fast-store-mac"))
                .expect("HMAC takes any key length"),
        }
    }

    /// Encrypts `plaintext` for the fast-store key `key`.
    pub fn seal(&self, key: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .aead
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: key.as_bytes() })
            .expect("XChaCha20-Poly1305 encrypts any length this service stores");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value sealed for `key`; `None` when it was not (altered,
    /// moved from another key, sealed under another master password).
    pub fn open(&self, key: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.aead
            .decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: key.as_bytes() })
            .ok()
            .map(Zeroizing::new)
    }

    /// `tag || value`: a value anyone may read but only this service writes.
    pub fn tagged(&self, key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG_LEN + value.len());
        out.extend_from_slice(&self.mac(key, value).finalize().into_bytes());
        out.extend_from_slice(value);
        out
    }

    /// The value behind a valid tag; `None` for a forged or altered entry.
    pub fn verified<'a>(&self, key: &str, tagged: &'a [u8]) -> Option<&'a [u8]> {
        if tagged.len() < TAG_LEN {
            return None;
        }
        let (tag, value) = tagged.split_at(TAG_LEN);
        self.mac(key, value).verify_slice(tag).ok().map(|()| value)
    }

    fn mac(&self, key: &str, value: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&u64::try_from(key.len()).unwrap_or(u64::MAX).to_be_bytes());
        mac.update(key.as_bytes());
        mac.update(value);
        mac
    }
}
