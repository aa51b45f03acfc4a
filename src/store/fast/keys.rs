//! Every Redis key latchkey writes is built here.
//!
//! Layout: `<prefix>:<kind>:{<id>}[:<part>]`. The braces are a Redis Cluster
//! hash tag: all keys of one entity (one session, one rate-limit subject, one
//! login attempt) land in the same slot, so a script that touches several of
//! them works on a cluster. The prefix lets several deployments or test runs
//! share a Redis.

use std::fmt::Write as _;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:<kind>:{<id>}`.
    pub fn tagged(&self, kind: &str, id: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + id.len() + 4);
        let _ = write!(key, "{}:{}:{{{}}}", self.prefix, kind, id);
        key
    }

    /// `<prefix>:<kind>:{<id>}:<part>`: a second key in the same slot.
    pub fn tagged_part(&self, kind: &str, id: &str, part: &str) -> String {
        let mut key = self.tagged(kind, id);
        key.push(':');
        key.push_str(part);
        key
    }

    /// Cached session, by the hash of its token.
    pub fn session(&self, token_hash: &str) -> String {
        self.tagged("sess", token_hash)
    }

    /// OPAQUE server login state between start and finish.
    pub fn login_state(&self, login_id: &str) -> String {
        self.tagged("login", login_id)
    }

    /// A pending second factor, by the hash of its MFA token.
    pub fn mfa(&self, token_hash: &str) -> String {
        self.tagged("mfa", token_hash)
    }

    /// Pending registration (username reserved between start and finish).
    pub fn registration(&self, username: &str) -> String {
        self.tagged("reg", username)
    }

    /// A generic counter (attempts, uses) of one subject.
    pub fn counter(&self, name: &str, subject: &str) -> String {
        self.tagged_part("ctr", subject, name)
    }
}

/// The hash slot of a key, as Redis Cluster computes it (CRC16 of the hash
/// tag). Used by tests to prove that multi-key operations stay in one slot.
pub fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            bytes[open + 1..]
                .iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &bytes[open + 1..open + 1 + len])
        })
        .unwrap_or(bytes);
    crc16_xmodem(tagged) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_hash_tags() {
        let keys = Keys::new("lk");
        assert_eq!(keys.session("abc"), "lk:sess:{abc}");
        assert_eq!(keys.counter("fail", "u1"), "lk:ctr:{u1}:fail");
        assert_eq!(hash_slot(&keys.counter("a", "u1")), hash_slot(&keys.counter("b", "u1")));
    }

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification / CLUSTER KEYSLOT.
        assert_eq!(hash_slot("123456789"), 12739);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("{user1000}.followers"));
        assert_eq!(hash_slot("foo{}{bar}"), hash_slot("foo{}{bar}"));
    }
}
