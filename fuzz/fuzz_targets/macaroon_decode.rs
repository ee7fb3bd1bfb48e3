//! Macaroons as JSON, the way the daemon and the client read them: a bare V2 macaroon (Go or
//! Python style) or a bakery v3 wrapper, then everything done with one — re-encoding, the
//! conditions, the third-party caveats to discharge, and verification against the root keys of
//! `crates/rxd-bakery/tests/vectors.json` (so valid chains from the seeds reach the HMAC and
//! secretbox paths). Decoding what was encoded must give the same macaroon back. The raw input,
//! and every identifier, also goes to the v3 macaroon id decoder, which accepts only what its
//! encoder writes.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use rxd_bakery::checkers::Checker;
use rxd_bakery::id::MacaroonId;
use rxd_bakery::macaroon::Macaroon;
use rxd_bakery::wire::BakeryMacaroon;
use rxd_bakery::{client, login};
use serde_json::Value;
use time::OffsetDateTime;

/// The vectors' root keys: first-party and third-party primaries.
const ROOT_KEYS: [[u8; 32]; 2] = [
    [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f,
    ],
    [
        0x03, 0xff, 0x49, 0x3e, 0x1d, 0xaa, 0xf2, 0x4a, 0xf0, 0xaf, 0x1d, 0xaa, 0x3c, 0x66, 0x5f,
        0xb6, 0x94, 0x2c, 0xd2, 0x0a, 0x82, 0xe8, 0x5a, 0xff, 0xff, 0x88, 0x5b, 0xd0, 0x81, 0x1d,
        0x61, 0x43,
    ],
];

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

/// The id decoder is canonical: whatever it accepts, the encoder writes back byte for byte.
fn macaroon_id(bytes: &[u8]) {
    if let Ok(id) = MacaroonId::decode(bytes) {
        assert_eq!(id.encode(), bytes, "macaroon id round trip");
    }
}

fn exercise(slice: &[Macaroon]) {
    for m in slice {
        macaroon_id(&m.identifier);
    }
    let Some((primary, discharges)) = slice.split_first() else {
        return;
    };
    for key in &ROOT_KEYS {
        let mut checker = Checker::new(now());
        let _ = primary.verify(key, discharges, &mut |c| checker.check(c));
    }
    let _ = login::root_key_id(&primary.identifier);
    let _ = login::verify(slice, &|_| Some(ROOT_KEYS[1]), now());
    let _ = client::expiry(slice);
    let _ = client::still_valid(slice, now());
    let _ = client::declared_user(slice);
    for d in discharges {
        let bound = d.bound_to(primary);
        assert_eq!(bound.identifier, d.identifier);
    }
}

fuzz_target!(|data: &[u8]| {
    macaroon_id(data);
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // A slice (cookie payload) or a single macaroon.
    let items: Vec<&Value> = match &v {
        Value::Array(a) => a.iter().take(8).collect(),
        other => vec![other],
    };
    let mut slice = Vec::new();
    for item in items {
        if let Ok(m) = Macaroon::from_json(item) {
            let again = Macaroon::from_json(&m.to_json()).expect("our own JSON decodes");
            assert_eq!(again, m, "JSON round trip");
            let _ = m.to_binary();
            for c in m.first_party_conditions() {
                let _ = Checker::new(now()).check(&c);
            }
        }
        if let Ok(bm) = BakeryMacaroon::from_json(item) {
            // Only v3 wrappers are ever encoded (the daemon's own login macaroons); a bare V2
            // macaroon read as version 2 would encode as a wrapper `from_json` refuses.
            if bm.version == 3 {
                let again = BakeryMacaroon::from_json(&bm.to_json()).expect("our own JSON decodes");
                assert_eq!(again, bm, "wrapper round trip");
            }
            for p in client::pending(&bm) {
                let _ = client::is_local(&p.location);
                let _ = client::discharge_form(&p, None);
            }
            slice.push(bm.macaroon);
        }
    }
    exercise(&slice);
});
