//! States the domain compares: a device's trust and a session's assurance
//! level. A leaf module: the store converts rows to these at its boundary,
//! and serde gives the wire names (`unknown`, `trusted`, `blocked`;
//! `aal1`, `aal2`).

use serde::{Deserialize, Serialize};

/// Trust of a device (SPEC §4 "Devices").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    #[default]
    Unknown,
    /// Not locked out by guessing from elsewhere.
    Trusted,
    /// Its logins are refused; only an admin sets or lifts it.
    Blocked,
}

/// Authenticator assurance level (NIST SP 800-63B) of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aal {
    /// A password.
    Aal1,
    /// A password and a second factor.
    Aal2,
}

/// A stored value that names no known state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire and column name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err(UnknownState(other.to_owned())),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_names!(Trust { Unknown => "unknown", Trusted => "trusted", Blocked => "blocked" });
wire_names!(Aal { Aal1 => "aal1", Aal2 => "aal2" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for t in [Trust::Unknown, Trust::Trusted, Trust::Blocked] {
            assert_eq!(t.as_str().parse::<Trust>(), Ok(t));
            assert_eq!(serde_json::to_value(t).expect("json"), serde_json::json!(t.as_str()));
        }
        for a in [Aal::Aal1, Aal::Aal2] {
            assert_eq!(a.as_str().parse::<Aal>(), Ok(a));
            assert_eq!(serde_json::to_value(a).expect("json"), serde_json::json!(a.as_str()));
        }
        assert!("root".parse::<Trust>().is_err());
        assert!(Aal::Aal2 > Aal::Aal1);
    }
}
