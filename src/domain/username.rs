//! Usernames are normalized before any use (lookup, OPAQUE credential
//! identifier, rate-limit bucket) with the RFC 8265 UsernameCaseMapped
//! profile: width mapping, case folding, NFC. "Alice", "alice" and the
//! full-width "ａlice" are one account.

use precis_core::profile::PrecisFastInvocation as _;
use precis_profiles::UsernameCaseMapped;

use super::{Error, Result};

pub const MAX_USERNAME_CHARS: usize = 64;

/// A normalized username.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::InvalidRequest("username is empty".into()));
        }
        // Bound the work before normalizing (NFC of a huge string is not free).
        if raw.chars().count() > MAX_USERNAME_CHARS * 4 {
            return Err(Error::InvalidRequest(format!("username is longer than {MAX_USERNAME_CHARS} characters")));
        }
        let normalized = UsernameCaseMapped::enforce(raw).map_err(|_| {
            Error::InvalidRequest(
                "username has characters that are not allowed (control characters, spaces, symbols)".into(),
            )
        })?;
        if normalized.chars().count() > MAX_USERNAME_CHARS {
            return Err(Error::InvalidRequest(format!("username is longer than {MAX_USERNAME_CHARS} characters")));
        }
        Ok(Self(normalized.into_owned()))
    }

    /// Wraps a value read back from the database (already normalized).
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For log lines: escaped, so a crafted name cannot forge log output.
    pub fn escaped(&self) -> String {
        self.0.escape_default().to_string()
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.escaped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_width_fold_to_one_name() {
        let a = Username::parse("Alice").expect("valid");
        assert_eq!(a.as_str(), "alice");
        assert_eq!(Username::parse("alice").expect("valid"), a);
        assert_eq!(Username::parse("\u{ff41}lice").expect("full-width a"), a);
        assert_eq!(Username::parse("ALICE").expect("valid"), a);
        assert_eq!(Username::parse("jürgen").expect("valid").as_str(), "jürgen");
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "a\u{0}b", "tab\there", "new\nline", "with space", "\u{7}bell"] {
            assert!(matches!(Username::parse(bad), Err(Error::InvalidRequest(_))), "{bad:?}");
        }
        assert!(Username::parse(&"a".repeat(64)).is_ok());
        assert!(Username::parse(&"a".repeat(65)).is_err());
        assert!(Username::parse(&"a".repeat(100_000)).is_err());
    }
}
