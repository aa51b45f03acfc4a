//! The OPAQUE (RFC 9807) cipher suite latchkey speaks, fixed so that it
//! interoperates with `@serenity-kit/opaque` 1.x: OPRF ristretto255-SHA512,
//! 3DH over ristretto255 with SHA-512, and Argon2id (m = 64 MiB, t = 3,
//! p = 4, zero salt, 64-byte output) as the key stretching function.
//!
//! The server never runs the KSF: it only matters to clients, which must
//! use exactly these parameters. opaque-ke's own `Ksf` impl for
//! `argon2::Argon2` uses `Argon2::default()` (19 MiB, t = 2, p = 1) and would
//! derive different keys.

use argon2::{Algorithm, Argon2, Params, Version};
use opaque_ke::errors::InternalError;
use opaque_ke::generic_array::{ArrayLength, GenericArray};
use opaque_ke::ksf::Ksf;

pub const KSF_MEMORY_KIB: u32 = 65536;
pub const KSF_ITERATIONS: u32 = 3;
pub const KSF_PARALLELISM: u32 = 4;

/// Argon2id with the suite's parameters (the `Default`), or cheaper ones
/// for load generators whose users register and log in with the same
/// cheap setting ([`Argon2idKsf::cheap`]): the server's work is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2idKsf {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2idKsf {
    fn default() -> Self {
        Self { memory_kib: KSF_MEMORY_KIB, iterations: KSF_ITERATIONS, parallelism: KSF_PARALLELISM }
    }
}

impl Argon2idKsf {
    /// 8 KiB, one pass: for benchmark users only, never for people.
    pub fn cheap() -> Self {
        Self { memory_kib: 8, iterations: 1, parallelism: 1 }
    }
}

impl Ksf for Argon2idKsf {
    fn hash<L: ArrayLength<u8>>(&self, input: GenericArray<u8, L>) -> Result<GenericArray<u8, L>, InternalError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(L::USIZE))
            .map_err(|_| InternalError::KsfError)?;
        let mut output = GenericArray::default();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(&input, &[0; argon2::RECOMMENDED_SALT_LEN], &mut output)
            .map_err(|_| InternalError::KsfError)?;
        Ok(output)
    }
}

/// The product's cipher suite.
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = Argon2idKsf;
}
