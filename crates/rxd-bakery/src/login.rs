//! The daemon's side of a Candid login: the macaroon it mints for a client to discharge, and the
//! verification of what the client brings back.
//!
//! The identifier is go-macaroon-bakery's own v3 layout (`id`): a 16-byte nonce, the root key's id
//! (kept by the caller, who can rotate it) as the storage id, and the one operation a login
//! macaroon grants, `login` on `login`. Go and Python bakeries parse every `0x03` identifier they
//! are shown, and Candid is shown ours whenever it shares a host name with the daemon.

use crate::checkers::{time_before, Checker};
use crate::codec::{self, KeyPair};
use crate::id::{self, MacaroonId, Op};
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
pub const ROOT_KEY_ID_LEN: usize = 16;
pub const ROOT_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 16;
/// The entity and action of the one operation a login macaroon grants (go-macaroon-bakery's
/// `LoginOp`).
pub const LOGIN_OP: &str = "login";
/// The length of the identifiers rxd minted before it used go-macaroon-bakery's layout:
/// `0x03 | nonce (16) | root key id (16)`.
const OLD_ID_LEN: usize = 1 + NONCE_LEN + ROOT_KEY_ID_LEN;
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
    let id = MacaroonId {
        nonce: rand::random::<[u8; NONCE_LEN]>().to_vec(),
        storage_id: key_id.to_vec(),
        ops: vec![Op {
            entity: LOGIN_OP.into(),
            actions: vec![LOGIN_OP.into()],
        }],
    };
    let mut m = Macaroon::new(root_key, id.encode(), &candid.location);

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

/// The root key id a login macaroon's identifier names, if it is one of ours: a v3 identifier
/// granting the login operation, or one in rxd's older layout. The older ones are still read so
/// that logins made before the change keep working until they expire (their root keys are
/// purged a day plus `candid.expiry` after their last use for minting): refusing them would send
/// `lxc` to Candid carrying that cookie, which is the failure the new layout avoids. No valid v3
/// identifier of ours is `OLD_ID_LEN` long, so the two cannot be confused.
pub fn root_key_id(identifier: &[u8]) -> Option<RootKeyId> {
    if identifier.len() == OLD_ID_LEN && identifier[0] == id::VERSION {
        return identifier[1 + NONCE_LEN..].try_into().ok();
    }
    let id = MacaroonId::decode(identifier).ok()?;
    let login = id
        .ops
        .iter()
        .any(|op| op.entity == LOGIN_OP && op.actions.iter().any(|a| a == LOGIN_OP));
    if !login {
        return None;
    }
    id.storage_id.as_slice().try_into().ok()
}

/// The user name a slice's discharges declare, verifying nothing: who a login that failed
/// claims to be, for the security log. Never a basis for a decision.
pub fn claimed_username(slice: &[Macaroon]) -> Option<String> {
    slice
        .iter()
        .skip(1)
        .flat_map(|m| &m.caveats)
        .filter(|c| !c.is_third_party())
        .find_map(|c| {
            let name = std::str::from_utf8(&c.id)
                .ok()?
                .strip_prefix("declared username ")?;
            (!name.is_empty() && name.len() <= 256).then(|| name.to_owned())
        })
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
        assert_eq!(claimed_username(&both).as_deref(), Some("alice"));
        assert_eq!(
            claimed_username(&slice[..1]),
            None,
            "the holder's own claim is not read"
        );
    }

    /// The identifier is go-macaroon-bakery's v3 layout: a fresh nonce, the root key's id as the
    /// storage id, the login operation.
    #[test]
    fn minted_ids_are_go_bakery_v3_and_name_the_root_key() {
        let (ours, candid) = (KeyPair::generate(), KeyPair::generate());
        let tp = ThirdParty {
            location: "https://candid.example".into(),
            public_key: candid.public(),
        };
        let later = OffsetDateTime::now_utc() + Duration::hours(1);
        let a = mint(&[7; 16], &[9; 32], &tp, &ours, later)
            .macaroon
            .identifier;
        let b = mint(&[7; 16], &[9; 32], &tp, &ours, later)
            .macaroon
            .identifier;
        let id = MacaroonId::decode(&a).unwrap();
        assert_eq!(id.storage_id, [7; 16]);
        assert_eq!(id.nonce.len(), 16);
        assert_eq!(
            id.ops,
            [Op {
                entity: "login".into(),
                actions: vec!["login".into()]
            }]
        );
        assert_ne!(id.nonce, MacaroonId::decode(&b).unwrap().nonce);
        assert_eq!(root_key_id(&a), Some([7; 16]));
    }

    /// Which identifiers name a root key: ours in both layouts; not a v3 identifier for another
    /// operation, without a usable storage id, or in another version.
    #[test]
    fn root_key_ids_old_and_new() {
        let v3 = |storage_id: &[u8], entity: &str, action: &str| {
            MacaroonId {
                nonce: vec![1; 16],
                storage_id: storage_id.to_vec(),
                ops: vec![Op {
                    entity: entity.into(),
                    actions: vec![action.into()],
                }],
            }
            .encode()
        };
        let old = [&[3u8][..], &[0x5a; 16], &[0x11; 16]].concat();
        for (name, identifier, want) in [
            ("v3 login", v3(&[4; 16], "login", "login"), Some([4; 16])),
            ("old layout", old.clone(), Some([0x11; 16])),
            (
                "old layout, version 2",
                [&[2u8][..], &old[1..]].concat(),
                None,
            ),
            ("old layout, one byte short", old[..32].to_vec(), None),
            ("v3, another op", v3(&[4; 16], "instances", "login"), None),
            ("v3, another action", v3(&[4; 16], "login", "read"), None),
            ("v3, short storage id", v3(&[4; 15], "login", "login"), None),
            ("v3, no storage id", v3(&[], "login", "login"), None),
        ] {
            assert_eq!(root_key_id(&identifier), want, "{name}");
        }
    }

    /// A login minted in the old layout, before this change, still verifies until it expires.
    #[test]
    fn an_old_layout_login_still_verifies() {
        let (ours, candid) = (KeyPair::generate(), KeyPair::generate());
        let tp = ThirdParty {
            location: "https://candid.example".into(),
            public_key: candid.public(),
        };
        let (kid, key) = ([7u8; 16], [9u8; 32]);
        let now = OffsetDateTime::now_utc();
        let mut bm = mint(&kid, &key, &tp, &ours, now + Duration::hours(1));
        // The same macaroon as the old code made it: only the identifier differs.
        let old_id = [&[3u8][..], &[0x5a; 16], &kid].concat();
        let mut m = Macaroon::new(&key, old_id, &tp.location);
        let (cid, _) = bm.caveat_data.iter().next().unwrap();
        let info = decode(&bm.caveat_data[cid], &candid).unwrap();
        m.add_third_party(&info.root_key, cid.clone(), &tp.location);
        m.add_first_party(&time_before(now + Duration::hours(1)));
        bm.macaroon = m;
        let d = discharge(&bm, &candid, "alice", Duration::hours(24));
        let slice = [bm.macaroon.clone(), d.bound_to(&bm.macaroon)];
        let keys = |id: &RootKeyId| (id == &kid).then_some(key);
        assert_eq!(verify(&slice, &keys, now).unwrap().username, "alice");
    }
}
