//! OPAQUE protocol messages on the wire: base64url without padding, of the
//! exact length the suite defines. Anything else is a 400 before any
//! cryptography runs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Error, Result};

pub const REGISTRATION_REQUEST_LEN: usize = 32;
pub const REGISTRATION_RECORD_LEN: usize = 192;
pub const CREDENTIAL_REQUEST_LEN: usize = 96;
pub const CREDENTIAL_FINALIZATION_LEN: usize = 64;

/// Decodes `field`, checking its length.
pub fn decode(field: &str, value: &str, len: usize) -> Result<Vec<u8>> {
    if value.contains('=') {
        return Err(Error::InvalidRequest(format!("{field} must be base64url without padding")));
    }
    let bytes =
        URL_SAFE_NO_PAD.decode(value).map_err(|_| Error::InvalidRequest(format!("{field} is not valid base64url")))?;
    if bytes.len() != len {
        return Err(Error::InvalidRequest(format!("{field} must be {len} bytes, not {}", bytes.len())));
    }
    Ok(bytes)
}

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_base64url() {
        assert_eq!(decode("m", &encode(&[7; 32]), 32).expect("ok"), vec![7; 32]);
        assert!(decode("m", &encode(&[7; 31]), 32).is_err(), "wrong length");
        let padded = base64::engine::general_purpose::URL_SAFE.encode([7u8; 32]);
        assert!(padded.ends_with('='));
        assert!(decode("m", &padded, 32).is_err(), "padding refused");
        let standard = base64::engine::general_purpose::STANDARD_NO_PAD.encode([0xfbu8; 32]);
        assert!(decode("m", &standard, 32).is_err(), "+/ alphabet refused");
        assert!(decode("m", "!!!!", 3).is_err());
    }
}
