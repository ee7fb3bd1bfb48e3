//! The bakery's third-party caveat payload, version 3: the discharge root key and condition,
//! sealed with NaCl box (curve25519, XSalsa20-Poly1305) from the minting service's key to the
//! third party's.
//!
//! ```text
//! 0x03 | third-party public key[0..4] | first-party public key (32) | nonce (24) | box(secret)
//! secret = 0x03 | uvarint(len root) | root | uvarint(len ns) | ns | condition
//! ```

use crate::{b64, BakeryError};
use crypto_box::aead::{Aead, AeadCore};
use crypto_box::{PublicKey, SalsaBox, SecretKey};

pub const VERSION: u8 = 3;
const PREFIX_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const MIN_LEN: usize = 1 + PREFIX_LEN + 32 + NONCE_LEN + 16;

/// A curve25519 key pair (the daemon's bakery key, or an agent's key).
#[derive(Clone)]
pub struct KeyPair {
    secret: SecretKey,
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        KeyPair {
            secret: SecretKey::generate(&mut crypto_box::aead::OsRng),
        }
    }

    pub fn from_secret(bytes: [u8; 32]) -> KeyPair {
        KeyPair {
            secret: SecretKey::from(bytes),
        }
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    pub fn public(&self) -> [u8; 32] {
        *self.secret.public_key().as_bytes()
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair(public {})", b64::std(&self.public()))
    }
}

/// A 32-byte public key from its base64 text (either alphabet).
pub fn parse_public_key(text: &str) -> Option<[u8; 32]> {
    b64::decode(text.trim())?.try_into().ok()
}

pub fn put_uvarint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a uvarint, returning it and the rest.
pub fn take_uvarint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, &b[i + 1..]));
        }
    }
    None
}

/// What a third party learns from a caveat payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaveatInfo {
    pub root_key: Vec<u8>,
    pub namespace: String,
    pub condition: String,
    pub first_party_public: [u8; 32],
}

pub fn encode(
    condition: &str,
    root_key: &[u8],
    namespace: &str,
    third_party: &[u8; 32],
    ours: &KeyPair,
) -> Vec<u8> {
    let mut secret = vec![VERSION];
    put_uvarint(root_key.len() as u64, &mut secret);
    secret.extend_from_slice(root_key);
    put_uvarint(namespace.len() as u64, &mut secret);
    secret.extend_from_slice(namespace.as_bytes());
    secret.extend_from_slice(condition.as_bytes());

    let sbox = SalsaBox::new(&PublicKey::from(*third_party), &ours.secret);
    let nonce = SalsaBox::generate_nonce(&mut crypto_box::aead::OsRng);
    let sealed = sbox
        .encrypt(&nonce, secret.as_slice())
        .expect("box sealing cannot fail");
    let mut out = vec![VERSION];
    out.extend_from_slice(&third_party[..PREFIX_LEN]);
    out.extend_from_slice(&ours.public());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a payload addressed to `ours` (the third party's side; an agent uses it for its local
/// caveats).
pub fn decode(payload: &[u8], ours: &KeyPair) -> Result<CaveatInfo, BakeryError> {
    if payload.len() < MIN_LEN {
        return Err(BakeryError::BadCaveat("too short"));
    }
    if payload[0] != VERSION {
        return Err(BakeryError::BadCaveat("not version 3"));
    }
    if payload[1..1 + PREFIX_LEN] != ours.public()[..PREFIX_LEN] {
        return Err(BakeryError::BadCaveat("public key mismatch"));
    }
    let rest = &payload[1 + PREFIX_LEN..];
    let first_party_public: [u8; 32] = rest[..32].try_into().expect("length checked");
    let nonce = &rest[32..32 + NONCE_LEN];
    let sbox = SalsaBox::new(&PublicKey::from(first_party_public), &ours.secret);
    let secret = sbox
        .decrypt(nonce.into(), &rest[32 + NONCE_LEN..])
        .map_err(|_| BakeryError::Decrypt)?;
    let (&version, rest) = secret
        .split_first()
        .ok_or(BakeryError::BadCaveat("empty secret"))?;
    if version != VERSION {
        return Err(BakeryError::BadCaveat("secret version"));
    }
    let (n, rest) = take_uvarint(rest).ok_or(BakeryError::BadCaveat("root key length"))?;
    let n = usize::try_from(n).map_err(|_| BakeryError::BadCaveat("root key length"))?;
    if rest.len() < n {
        return Err(BakeryError::BadCaveat("root key length"));
    }
    let (root_key, rest) = rest.split_at(n);
    let (n, rest) = take_uvarint(rest).ok_or(BakeryError::BadCaveat("namespace length"))?;
    let n = usize::try_from(n).map_err(|_| BakeryError::BadCaveat("namespace length"))?;
    if rest.len() < n {
        return Err(BakeryError::BadCaveat("namespace length"));
    }
    let (ns, condition) = rest.split_at(n);
    Ok(CaveatInfo {
        root_key: root_key.to_vec(),
        namespace: String::from_utf8(ns.to_vec())
            .map_err(|_| BakeryError::BadCaveat("namespace"))?,
        condition: String::from_utf8(condition.to_vec())
            .map_err(|_| BakeryError::BadCaveat("condition"))?,
        first_party_public,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_round_trip() {
        for n in [0u64, 1, 127, 128, 300, 1 << 40] {
            let mut b = Vec::new();
            put_uvarint(n, &mut b);
            assert_eq!(take_uvarint(&b), Some((n, &[][..])));
        }
        assert_eq!(take_uvarint(&[0x80]), None);
    }

    #[test]
    fn sealed_to_the_third_party_only() {
        let (daemon, candid, other) = (
            KeyPair::generate(),
            KeyPair::generate(),
            KeyPair::generate(),
        );
        let p = encode(
            "is-authenticated-user",
            b"rootkey",
            "std:",
            &candid.public(),
            &daemon,
        );
        let info = decode(&p, &candid).unwrap();
        assert_eq!(info.condition, "is-authenticated-user");
        assert_eq!(info.root_key, b"rootkey");
        assert_eq!(info.namespace, "std:");
        assert_eq!(info.first_party_public, daemon.public());
        assert!(decode(&p, &other).is_err());
        let mut t = p.clone();
        *t.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&t, &candid), Err(BakeryError::Decrypt));
        assert!(decode(&p[..20], &candid).is_err());
    }
}
