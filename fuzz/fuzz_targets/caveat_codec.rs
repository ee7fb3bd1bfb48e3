//! The third-party caveat codec v3, from the third party's side (the daemon's agent opens local
//! caveats with it). The first byte picks a mode: 0 decodes the rest as a payload as it arrives;
//! 1 seals the rest as the secret (so the fuzzer reaches the parser behind the box) and decodes
//! it; 2 splits the rest into condition, root key and namespace and checks that decoding what
//! `encode` made gives them back. Keys are the vectors' daemon and Candid keys.
#![no_main]
#![forbid(unsafe_code)]

use crypto_box::aead::Aead;
use crypto_box::{PublicKey, SalsaBox};
use libfuzzer_sys::fuzz_target;
use rxd_bakery::codec::{self, KeyPair};

const DAEMON_SECRET: [u8; 32] = [
    0x1e, 0x71, 0x32, 0x6d, 0x1f, 0xab, 0x18, 0x34, 0x1e, 0xa0, 0xeb, 0x5b, 0x0d, 0x22, 0x75, 0xa5,
    0x46, 0xdb, 0x4d, 0xc9, 0x4d, 0x7d, 0x61, 0xdd, 0x0d, 0xed, 0x40, 0x2f, 0x3f, 0x73, 0xf3, 0xd8,
];
const CANDID_SECRET: [u8; 32] = [
    0x31, 0xb9, 0xa8, 0x99, 0xa8, 0xe4, 0x32, 0x76, 0x13, 0xa0, 0x19, 0xd6, 0x0b, 0x2b, 0xf2, 0xbe,
    0x9d, 0x12, 0x53, 0x3d, 0x4d, 0x30, 0xd7, 0xf6, 0x07, 0xc2, 0x9c, 0xf1, 0xf3, 0xda, 0x00, 0x5b,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let daemon = KeyPair::from_secret(DAEMON_SECRET);
    let candid = KeyPair::from_secret(CANDID_SECRET);
    match mode % 3 {
        0 => {
            if let Ok(info) = codec::decode(rest, &candid) {
                assert_eq!(info.first_party_public, daemon.public());
            }
            let _ = codec::take_uvarint(rest);
            let _ = codec::parse_public_key(&String::from_utf8_lossy(rest));
        }
        1 => {
            // The envelope the codec expects, around a secret the fuzzer chose.
            let nonce = [7u8; 24];
            let sbox = SalsaBox::new(&PublicKey::from(candid.public()), &daemon_secret_key());
            let sealed = sbox.encrypt((&nonce).into(), rest).unwrap();
            let mut payload = vec![codec::VERSION];
            payload.extend_from_slice(&candid.public()[..4]);
            payload.extend_from_slice(&daemon.public());
            payload.extend_from_slice(&nonce);
            payload.extend_from_slice(&sealed);
            if let Ok(info) = codec::decode(&payload, &candid) {
                // Whatever decodes must re-encode to a payload that decodes the same way.
                let again = codec::decode(
                    &codec::encode(
                        &info.condition,
                        &info.root_key,
                        &info.namespace,
                        &candid.public(),
                        &daemon,
                    ),
                    &candid,
                )
                .unwrap();
                assert_eq!(again, info);
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let mut parts = text.splitn(3, '\0');
            let condition = parts.next().unwrap_or_default();
            let root_key = parts.next().unwrap_or_default().as_bytes();
            let namespace = parts.next().unwrap_or_default();
            let payload = codec::encode(condition, root_key, namespace, &candid.public(), &daemon);
            let info = codec::decode(&payload, &candid).unwrap();
            assert_eq!(info.condition, condition);
            assert_eq!(info.root_key, root_key);
            assert_eq!(info.namespace, namespace);
            // Not addressed to the daemon: refused.
            assert!(codec::decode(&payload, &daemon).is_err());
        }
    }
});

fn daemon_secret_key() -> crypto_box::SecretKey {
    crypto_box::SecretKey::from(DAEMON_SECRET)
}
