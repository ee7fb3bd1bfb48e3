//! Where a request carries macaroons: `Cookie` headers (`macaroon-*` pairs) and `Macaroons`
//! headers, each value base64 of a JSON slice, parsed with the daemon's bounds, then verified
//! against the vectors' root key as the daemon's login check would. The input is split into
//! header values at newlines; a first line starting with `M` goes to `Macaroons`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use rxd_bakery::{b64, cookie, login};
use time::OffsetDateTime;

const ROOT_KEY: [u8; 32] = [
    0x03, 0xff, 0x49, 0x3e, 0x1d, 0xaa, 0xf2, 0x4a, 0xf0, 0xaf, 0x1d, 0xaa, 0x3c, 0x66, 0x5f, 0xb6,
    0x94, 0x2c, 0xd2, 0x0a, 0x82, 0xe8, 0x5a, 0xff, 0xff, 0x88, 0x5b, 0xd0, 0x81, 0x1d, 0x61, 0x43,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let mut cookies = Vec::new();
    let mut macaroons = Vec::new();
    for line in text.split('\n') {
        match line.strip_prefix("Macaroons: ") {
            Some(v) => macaroons.push(v),
            None => cookies.push(line.strip_prefix("Cookie: ").unwrap_or(line)),
        }
    }
    for slice in cookie::slices(cookies.iter().copied(), macaroons.iter().copied()) {
        assert!(!slice.is_empty() && slice.len() <= 8, "bounded slice");
        let _ = login::verify(&slice, &|_| Some(ROOT_KEY), now);
        // What the client stores back in its jar must parse again to the same macaroons.
        let (primary, discharges) = slice.split_first().unwrap();
        let again = cookie::parse_slice(&cookie::encode_slice(primary, &[])).unwrap();
        assert_eq!(&again[0], primary);
        let _ = discharges;
    }
    let _ = cookie::parse_slice(text);
    if let Some(raw) = b64::decode(text) {
        assert_eq!(b64::decode(&b64::url(&raw)).as_deref(), Some(&raw[..]));
        assert_eq!(b64::decode(&b64::std(&raw)).as_deref(), Some(&raw[..]));
    }
});
