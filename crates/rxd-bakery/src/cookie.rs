//! Where clients put macaroons: cookies named `macaroon-*` and `Macaroons` headers, each holding
//! base64 of a JSON array (the primary, then its discharges).

use crate::macaroon::Macaroon;
use crate::wire::BakeryMacaroon;
use crate::{b64, BakeryError};
use serde_json::Value;

/// Bounds on what a request may make the daemon parse and verify.
const MAX_SLICES: usize = 8;
const MAX_SLICE_LEN: usize = 8;
const MAX_VALUE_LEN: usize = 16 * 1024;

/// One slice from a base64 JSON array.
pub fn parse_slice(value: &str) -> Result<Vec<Macaroon>, BakeryError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(BakeryError::Malformed("too large"));
    }
    let raw = b64::decode(value.trim_matches('"')).ok_or(BakeryError::Malformed("base64"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| BakeryError::Malformed("JSON"))?;
    let items = v.as_array().ok_or(BakeryError::Malformed("not an array"))?;
    if items.is_empty() || items.len() > MAX_SLICE_LEN {
        return Err(BakeryError::Malformed("slice length"));
    }
    items
        .iter()
        .map(|m| BakeryMacaroon::from_json(m).map(|b| b.macaroon))
        .collect()
}

/// Every slice a request carries, from its `Cookie` and `Macaroons` header values. Values that
/// do not parse are skipped: a stale or foreign cookie must not fail the request.
pub fn slices<'a>(
    cookie_headers: impl Iterator<Item = &'a str>,
    macaroons_headers: impl Iterator<Item = &'a str>,
) -> Vec<Vec<Macaroon>> {
    let from_cookies = cookie_headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            name.starts_with("macaroon-").then_some(value)
        });
    from_cookies
        .chain(macaroons_headers.flat_map(|h| h.split(',')).map(str::trim))
        .take(MAX_SLICES)
        .filter_map(|v| parse_slice(v).ok())
        .collect()
}

/// The cookie value for a slice: the primary and its discharges, each bound to the primary.
pub fn encode_slice(primary: &Macaroon, discharges: &[Macaroon]) -> String {
    let items: Vec<Value> = std::iter::once(primary.to_json())
        .chain(discharges.iter().map(|d| d.bound_to(primary).to_json()))
        .collect();
    b64::std(Value::Array(items).to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_macaroon_cookies_and_headers_and_skips_junk() {
        let m = Macaroon::new(b"k", b"id".to_vec(), "");
        let v = encode_slice(&m, &[]);
        let cookie = format!("other=1; macaroon-auth={v}; macaroon-bad=!!!; macaroon-identity=e30");
        let got = slices([cookie.as_str()].into_iter(), [v.as_str()].into_iter());
        assert_eq!(got, vec![vec![m.clone()], vec![m]]);
        assert!(slices(["macaroon-x=W10"].into_iter(), std::iter::empty()).is_empty());
        let huge = "A".repeat(MAX_VALUE_LEN + 1);
        assert!(parse_slice(&huge).is_err());
    }
}
