//! Vectors made by an independent implementation (pymacaroons 0.13 and macaroonbakery 1.3.4, by
//! `tests/candid/make_vectors.py`): what Python signs, binds, wraps and encrypts must verify and
//! decode here, byte for byte where the format is deterministic.

use rxd_bakery::checkers::Checker;
use rxd_bakery::codec::{self, KeyPair};
use rxd_bakery::cookie;
use rxd_bakery::macaroon::{bind_signature, derive_key, Macaroon};
use rxd_bakery::wire::BakeryMacaroon;
use serde_json::Value;
use time::OffsetDateTime;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors.json")).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn key32(v: &Value) -> [u8; 32] {
    hex(v).try_into().unwrap()
}

fn before_2030() -> OffsetDateTime {
    time::macros::datetime!(2029-12-31 23:59 UTC)
}

#[test]
fn first_party_chain_json_and_binary() {
    let v = &vectors()["first_party"];
    let root = hex(&v["root_key_hex"]);
    assert_eq!(derive_key(&root).to_vec(), hex(&v["derived_key_hex"]));
    let mut m = Macaroon::new(&root, hex(&v["id_hex"]), v["location"].as_str().unwrap());
    for (c, sig) in v["caveats"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["signature_chain_hex"].as_array().unwrap().iter().skip(1))
    {
        m.add_first_party(c.as_str().unwrap());
        assert_eq!(m.signature.to_vec(), hex(sig));
    }
    assert_eq!(m.signature.to_vec(), hex(&v["signature_hex"]));
    assert_eq!(m.to_binary(), hex(&v["binary_v2_hex"]));
    // Python's and Go's JSON both read back to the same macaroon, and ours reads in Python's.
    assert_eq!(Macaroon::from_json(&v["json"]).unwrap(), m);
    assert_eq!(Macaroon::from_json(&v["go_json"]).unwrap(), m);
    let mut checker = Checker::new(before_2030());
    m.verify(&root, &[], &mut |c| checker.check(c)).unwrap();
    assert_eq!(checker.declared["username"], "alice");
    let mut late = Checker::new(time::macros::datetime!(2030-01-01 00:00:00.2 UTC));
    assert!(m.verify(&root, &[], &mut |c| late.check(c)).is_err());
}

#[test]
fn third_party_slice_from_python_verifies() {
    let v = &vectors()["third_party"];
    let root = hex(&v["root_key_hex"]);
    let primary = Macaroon::from_json(&v["primary_json"]).unwrap();
    assert_eq!(primary.signature.to_vec(), hex(&v["primary_signature_hex"]));
    let d = &v["discharge"];
    assert_eq!(
        bind_signature(&primary.signature, &key32(&d["unbound_signature_hex"])).to_vec(),
        hex(&d["bound_signature_hex"])
    );
    // Every cookie encoding Python and Go use; the unbound one must fail.
    for (name, ok) in [
        ("cookie_std", true),
        ("cookie_urlsafe", true),
        ("cookie_unbound_std", false),
    ] {
        let slice = cookie::parse_slice(v[name].as_str().unwrap()).unwrap();
        let mut checker = Checker::new(before_2030());
        let r = slice[0].verify(&root, &slice[1..], &mut |c| checker.check(c));
        assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
        if ok {
            assert_eq!(checker.declared["username"], "alice@example.com");
        }
    }
    // The same primary in Go's renderings.
    for name in ["json", "json_b64_everywhere"] {
        let m = Macaroon::from_json(&vectors()["go_style"][name]).unwrap();
        assert_eq!(m, primary, "{name}");
    }
}

#[test]
fn bakery_wrappers_and_caveat_payloads_decode() {
    let all = vectors();
    let b = &all["third_party"]["bakery"];
    let candid = KeyPair::from_secret(key32(&b["candid_key"]["private_hex"]));
    assert_eq!(
        candid.public().to_vec(),
        hex(&b["candid_key"]["public_hex"])
    );
    for style in ["python_wrapper", "go_wrapper"] {
        let w = BakeryMacaroon::from_json(&b[style]).unwrap();
        assert_eq!(w.version, 3);
        let payload = &w.caveat_data[&vec![3u8, 0]];
        assert_eq!(payload, &hex(&b["payload_hex"]), "{style}");
        let info = codec::decode(payload, &candid).unwrap();
        assert_eq!(
            info.condition,
            "need-declared username is-authenticated-user"
        );
        assert_eq!(
            info.root_key,
            hex(&all["third_party"]["third_party"]["caveat_root_key_hex"])
        );
        assert_eq!(
            info.first_party_public.to_vec(),
            hex(&b["daemon_key"]["public_hex"])
        );
    }
    let body: rxd_bakery::wire::BakeryErrorBody =
        serde_json::from_value(b["discharge_required_body"].clone()).unwrap();
    assert_eq!(body.code, rxd_bakery::wire::DISCHARGE_REQUIRED);
    assert_eq!(body.info.unwrap().cookie_name_suffix, "auth");

    for c in all["caveat_v3"].as_array().unwrap() {
        let kp = KeyPair::from_secret(key32(&c["candid_key"]["private_hex"]));
        let info = codec::decode(&hex(&c["payload_hex"]), &kp).unwrap();
        assert_eq!(info.condition, c["condition"].as_str().unwrap());
        assert_eq!(info.namespace, c["namespace"].as_str().unwrap());
        assert_eq!(info.root_key, hex(&c["root_key_hex"]));
        assert_eq!(
            info.first_party_public.to_vec(),
            hex(&c["daemon_key"]["public_hex"])
        );
        // Our sealing of the same secret, with the same keys, opens to the same plaintext.
        let daemon = KeyPair::from_secret(key32(&c["daemon_key"]["private_hex"]));
        let ours = codec::encode(
            &info.condition,
            &info.root_key,
            &info.namespace,
            &kp.public(),
            &daemon,
        );
        assert_eq!(ours[..37], hex(&c["payload_hex"])[..37]);
        assert_eq!(codec::decode(&ours, &kp).unwrap(), info);
    }
}

/// Python's Oven writes the login identifier byte for byte as ours does, and ours reads it back
/// to the same nonce, storage id (the root key's id) and login operation.
#[test]
fn macaroon_id_matches_python_oven() {
    use rxd_bakery::id::{MacaroonId, Op};
    let v = &vectors()["macaroon_id"];
    let want = MacaroonId {
        nonce: hex(&v["nonce_hex"]),
        storage_id: hex(&v["storage_id_hex"]),
        ops: vec![Op {
            entity: "login".into(),
            actions: vec!["login".into()],
        }],
    };
    assert_eq!(v["ops"][0]["entity"], "login");
    assert_eq!(want.encode(), hex(&v["id_hex"]));
    assert_eq!(MacaroonId::decode(&hex(&v["id_hex"])), Ok(want));
    let key_id: [u8; 16] = hex(&v["storage_id_hex"]).try_into().unwrap();
    assert_eq!(
        rxd_bakery::login::root_key_id(&hex(&v["id_hex"])),
        Some(key_id)
    );
}
