//! Bearer tokens: 256 random bits, base64url, behind a type prefix that
//! secret scanners recognise (`lk_s_` session, `lk_r_` refresh, `lk_m_` MFA,
//! `lk_d_` device, `lk_t_` password reset).
//! Only the SHA-256 of a token is ever stored, in the database and in Redis:
//! a leaked database or cache dump holds no usable token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    Refresh,
    Mfa,
    Device,
    Reset,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Session => "lk_s_",
            Self::Refresh => "lk_r_",
            Self::Mfa => "lk_m_",
            Self::Device => "lk_d_",
            Self::Reset => "lk_t_",
        }
    }
}

/// Length of the base64url body of 32 random bytes.
const BODY_LEN: usize = 43;

/// A freshly generated token: the value for the client, the hash to store.
pub struct NewToken {
    pub value: String,
    pub hash: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken").field("hash", &self.hash).finish_non_exhaustive()
    }
}

pub fn generate(kind: TokenKind) -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut value = String::with_capacity(5 + BODY_LEN);
    value.push_str(kind.prefix());
    URL_SAFE_NO_PAD.encode_string(bytes, &mut value);
    let hash = hash(&value);
    NewToken { value, hash }
}

/// Hex SHA-256 of a token, as stored.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks a presented token's shape and returns its hash; `None` for
/// anything that cannot be a token of this kind (no lookup needed).
pub fn verify_shape(kind: TokenKind, presented: &str) -> Option<String> {
    let body = presented.strip_prefix(kind.prefix())?;
    (body.len() == BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| hash(presented))
}

/// A random opaque identifier (login attempts), base64url.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_prefix_entropy_and_hash() {
        let t = generate(TokenKind::Session);
        assert!(t.value.starts_with("lk_s_"));
        assert_eq!(t.value.len(), 5 + BODY_LEN);
        assert_eq!(t.hash.len(), 64);
        assert_eq!(verify_shape(TokenKind::Session, &t.value), Some(t.hash.clone()));
        assert_eq!(verify_shape(TokenKind::Refresh, &t.value), None, "a session token is not a refresh token");
        assert_ne!(generate(TokenKind::Session).value, t.value);
        assert!(!format!("{t:?}").contains(&t.value), "Debug never shows the token");
        for bad in ["", "lk_s_", "lk_s_short", &format!("{}=", &t.value[..t.value.len() - 1])] {
            assert_eq!(verify_shape(TokenKind::Session, bad), None, "{bad:?}");
        }
    }
}
