//! Login credentials: tokens are stored only as salted SHA-256 hashes, written
//! `"<salt hex>:<sha256(salt ‖ token) hex>"`, and compared in constant time.

use sha2::{Digest, Sha256};

/// One configured login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The account the session trades for (or, for drop copy, the login id).
    pub account: u32,
    salt: Vec<u8>,
    hash: [u8; 32],
    /// If not empty, a read-only drop-copy login receiving every event of these accounts.
    pub drop_copy_accounts: Vec<u32>,
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn digest(salt: &[u8], token: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(token);
    hasher.finalize().into()
}

/// The stored form of `token` with `salt`.
pub fn hash_token(salt: &[u8], token: &[u8]) -> String {
    format!("{}:{}", to_hex(salt), to_hex(&digest(salt, token)))
}

impl Credential {
    /// Parses a stored `"<salt hex>:<hash hex>"`.
    pub fn parse(
        account: u32,
        stored: &str,
        drop_copy_accounts: Vec<u32>,
    ) -> Result<Credential, String> {
        let (salt, hash) = stored.split_once(':').ok_or_else(|| {
            format!("login {account}: token_hash must be \"<salt hex>:<sha256 hex>\"")
        })?;
        let salt = from_hex(salt)
            .filter(|salt| salt.len() >= 8)
            .ok_or_else(|| format!("login {account}: the salt must be at least 8 bytes of hex"))?;
        let hash: [u8; 32] = from_hex(hash)
            .and_then(|hash| hash.try_into().ok())
            .ok_or_else(|| format!("login {account}: the hash must be 32 bytes of hex"))?;
        Ok(Credential {
            account,
            salt,
            hash,
            drop_copy_accounts,
        })
    }

    /// Whether `token` is this login's token (constant time in the token's content).
    pub fn verify(&self, token: &[u8]) -> bool {
        let computed = digest(&self.salt, token);
        computed
            .iter()
            .zip(&self.hash)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_hash_verifies_only_its_token() {
        let stored = hash_token(b"saltsalt", b"secret");
        let credential = Credential::parse(7, &stored, vec![]).unwrap();
        assert!(credential.verify(b"secret"));
        assert!(!credential.verify(b"secreT"));
        assert!(!credential.verify(b""));
        assert!(Credential::parse(7, "nohash", vec![]).is_err());
        assert!(Credential::parse(7, "00:00", vec![]).is_err());
    }
}
