//! The daemon's side of a Candid login: the macaroon it mints for a client to discharge, and the
//! verification of what the client brings back.
//!
//! The identifier is `0x03 | nonce (16) | root key id (16)`: opaque to everyone else, it names the
//! root key (kept by the caller, who can rotate it) and always means the one operation a login
//! macaroon grants.

use crate::checkers::{time_before, Checker};
use crate::codec::{self, KeyPair};
use crate::macaroon::Macaroon;
use crate::wire::BakeryMacaroon;
use crate::BakeryError;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// What the authentication server is asked to vouch for: that the client is an authenticated
/// user, whose name it must declare.
pub const LOGIN_CONDITION: &str = "need-declared username is-authenticated-user";
/// The checker namespace the daemon understands (go-macaroon-bakery's default for HTTP services).
pub const NAMESPACE: &str = "http:http std:";
/// The namespace the third-party condition is written in.
const CAVEAT_NAMESPACE: &str = "std:";
const ID_VERSION: u8 = 3;
pub const ROOT_KEY_ID_LEN: usize = 16;
pub const ROOT_KEY_LEN: usize = 32;
const ID_LEN: usize = 1 + 16 + ROOT_KEY_ID_LEN;
/// go-macaroon-bakery's root keys for third-party caveats are 24 bytes.
const CAVEAT_ROOT_KEY_LEN: usize = 24;

pub type RootKeyId = [u8; ROOT_KEY_ID_LEN];
pub type RootKey = [u8; ROOT_KEY_LEN];

/// The authentication server, as the daemon addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThirdParty {
    /// Its base URL: where clients go to discharge.
    pub location: String,
    pub public_key: [u8; 32],
}

/// A login macaroon for a client to take to `candid`, valid until `expires`.
pub fn mint(
    key_id: &RootKeyId,
    root_key: &RootKey,
    candid: &ThirdParty,
    ours: &KeyPair,
    expires: OffsetDateTime,
) -> BakeryMacaroon {
    let mut id = Vec::with_capacity(ID_LEN);
    id.push(ID_VERSION);
    id.extend_from_slice(&rand::random::<[u8; 16]>());
    id.extend_from_slice(key_id);
    let mut m = Macaroon::new(root_key, id, &candid.location);

    let caveat_root: [u8; CAVEAT_ROOT_KEY_LEN] = rand::random();
    // The short caveat id go-macaroon-bakery uses with cdata: version, then the caveat's index.
    let cid = vec![codec::VERSION, 0];
    let payload = codec::encode(
        LOGIN_CONDITION,
        &caveat_root,
        CAVEAT_NAMESPACE,
        &candid.public_key,
        ours,
    );
    m.add_third_party(&caveat_root, cid.clone(), &candid.location);
    m.add_first_party(&time_before(expires));
    BakeryMacaroon {
        macaroon: m,
        version: codec::VERSION,
        namespace: NAMESPACE.to_owned(),
        caveat_data: BTreeMap::from([(cid, payload)]),
    }
}

/// The root key id a login macaroon's identifier names, if it is one of ours.
pub fn root_key_id(identifier: &[u8]) -> Option<RootKeyId> {
    if identifier.len() != ID_LEN || identifier[0] != ID_VERSION {
        return None;
    }
    identifier[17..].try_into().ok()
}

/// A verified login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
}

/// Verifies one slice (primary first, then its discharges) at `now`.
pub fn verify(
    slice: &[Macaroon],
    root_key: &dyn Fn(&RootKeyId) -> Option<RootKey>,
    now: OffsetDateTime,
) -> Result<Login, BakeryError> {
    let (primary, discharges) = slice
        .split_first()
        .ok_or(BakeryError::Malformed("empty slice"))?;
    let id = root_key_id(&primary.identifier).ok_or(BakeryError::UnknownRootKey)?;
    let key = root_key(&id).ok_or(BakeryError::UnknownRootKey)?;
    let mut checker = Checker::new(now);
    primary.verify(&key, discharges, &mut |c| checker.check(c))?;
    match checker.declared.remove("username") {
        Some(u) if !u.is_empty() => Ok(Login { username: u }),
        _ => Err(BakeryError::Caveat("no user declared".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;
    use time::Duration;

    /// Plays Candid: opens the caveat and mints the discharge it would.
    fn discharge(bm: &BakeryMacaroon, candid: &KeyPair, user: &str, ttl: Duration) -> Macaroon {
        let (cid, payload) = bm.caveat_data.iter().next().unwrap();
        let info = decode(payload, candid).unwrap();
        assert_eq!(info.condition, LOGIN_CONDITION);
        let mut d = Macaroon::new(&info.root_key, cid.clone(), "");
        d.add_first_party(&format!("declared username {user}"));
        d.add_first_party(&time_before(OffsetDateTime::now_utc() + ttl));
        d
    }

    #[test]
    fn login_round_trip_and_refusals() {
        let (ours, candid) = (KeyPair::generate(), KeyPair::generate());
        let tp = ThirdParty {
            location: "https://candid.example".into(),
            public_key: candid.public(),
        };
        let (kid, key) = ([7u8; 16], [9u8; 32]);
        let keys = |id: &RootKeyId| (id == &kid).then_some(key);
        let now = OffsetDateTime::now_utc();
        let bm = mint(&kid, &key, &tp, &ours, now + Duration::hours(1));
        let d = discharge(&bm, &candid, "alice", Duration::hours(24));
        let slice = [bm.macaroon.clone(), d.bound_to(&bm.macaroon)];
        assert_eq!(verify(&slice, &keys, now).unwrap().username, "alice");

        // Expired primary; expired discharge; rotated-away root key; no discharge; empty user.
        assert!(verify(&slice, &keys, now + Duration::hours(2)).is_err());
        let short = discharge(&bm, &candid, "alice", Duration::seconds(-1));
        assert!(verify(
            &[bm.macaroon.clone(), short.bound_to(&bm.macaroon)],
            &keys,
            now
        )
        .is_err());
        assert_eq!(
            verify(&slice, &|_: &RootKeyId| None, now),
            Err(BakeryError::UnknownRootKey)
        );
        assert!(verify(&slice[..1], &keys, now).is_err());
        let nobody = discharge(&bm, &candid, "", Duration::hours(1));
        assert!(verify(
            &[bm.macaroon.clone(), nobody.bound_to(&bm.macaroon)],
            &keys,
            now
        )
        .is_err());
        // A name declared by the holder (anyone may add first-party caveats) conflicts with the
        // discharge's, even with correct signatures.
        let mut greedy = bm.macaroon.clone();
        greedy.add_first_party("declared username root");
        let both = [greedy.clone(), d.bound_to(&greedy)];
        assert!(matches!(
            verify(&both, &keys, now),
            Err(BakeryError::Caveat(_))
        ));
        // A discharge for another login macaroon's caveat, bound to this one.
        let other = mint(&kid, &key, &tp, &ours, now + Duration::hours(1));
        let od = discharge(&other, &candid, "alice", Duration::hours(1));
        assert!(verify(
            &[bm.macaroon.clone(), od.bound_to(&bm.macaroon)],
            &keys,
            now
        )
        .is_err());
        assert_eq!(root_key_id(b"short"), None);
    }
}
