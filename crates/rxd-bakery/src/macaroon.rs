//! Macaroons as libmacaroons defines them, in the V2 JSON form: the HMAC-SHA256 signature chain,
//! first- and third-party caveats, binding discharges to a primary, and verification.

use crate::{b64, BakeryError};
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const KEY_GENERATOR: &[u8] = b"macaroons-key-generator";
const NONCE_LEN: usize = 24;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The key a root key is turned into before signing: HMAC("macaroons-key-generator", root).
pub fn derive_key(root_key: &[u8]) -> [u8; 32] {
    hmac(KEY_GENERATOR, root_key)
}

fn third_party_sig(sig: &[u8; 32], vid: &[u8], cid: &[u8]) -> [u8; 32] {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(&hmac(sig, vid));
    both[32..].copy_from_slice(&hmac(sig, cid));
    hmac(sig, &both)
}

/// The signature a discharge carries once bound to the primary whose request it travels with.
pub fn bind_signature(primary: &[u8; 32], discharge: &[u8; 32]) -> [u8; 32] {
    let zero = [0u8; 32];
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(&hmac(&zero, primary));
    both[32..].copy_from_slice(&hmac(&zero, discharge));
    hmac(&zero, &both)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caveat {
    /// The condition of a first-party caveat, or the caveat id of a third-party one.
    pub id: Vec<u8>,
    /// Third-party only: the discharge root key, sealed under the signature so far.
    pub verification_id: Option<Vec<u8>>,
    pub location: Option<String>,
}

impl Caveat {
    pub fn is_third_party(&self) -> bool {
        self.verification_id.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macaroon {
    pub location: String,
    pub identifier: Vec<u8>,
    pub caveats: Vec<Caveat>,
    pub signature: [u8; 32],
}

impl Macaroon {
    pub fn new(root_key: &[u8], identifier: Vec<u8>, location: &str) -> Macaroon {
        let signature = hmac(&derive_key(root_key), &identifier);
        Macaroon {
            location: location.to_owned(),
            identifier,
            caveats: Vec::new(),
            signature,
        }
    }

    pub fn add_first_party(&mut self, condition: &str) {
        self.signature = hmac(&self.signature, condition.as_bytes());
        self.caveats.push(Caveat {
            id: condition.as_bytes().to_vec(),
            verification_id: None,
            location: None,
        });
    }

    /// Adds a third-party caveat whose discharge must be minted from `caveat_root_key`.
    pub fn add_third_party(&mut self, caveat_root_key: &[u8], caveat_id: Vec<u8>, location: &str) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = XSalsa20Poly1305::new(&self.signature.into())
            .encrypt(&nonce.into(), &derive_key(caveat_root_key)[..])
            .expect("secretbox sealing cannot fail");
        let mut vid = nonce.to_vec();
        vid.extend_from_slice(&sealed);
        self.signature = third_party_sig(&self.signature, &vid, &caveat_id);
        self.caveats.push(Caveat {
            id: caveat_id,
            verification_id: Some(vid),
            location: Some(location.to_owned()),
        });
    }

    /// This discharge as it must travel with `primary` (binding is skipped for the primary itself).
    pub fn bound_to(&self, primary: &Macaroon) -> Macaroon {
        let mut d = self.clone();
        if d.signature != primary.signature {
            d.signature = bind_signature(&primary.signature, &self.signature);
        }
        d
    }

    /// First-party conditions, as text (a condition that is not UTF-8 is kept lossy and will not
    /// match any checker).
    pub fn first_party_conditions(&self) -> impl Iterator<Item = String> + '_ {
        self.caveats
            .iter()
            .filter(|c| !c.is_third_party())
            .map(|c| String::from_utf8_lossy(&c.id).into_owned())
    }

    /// V2 JSON, as Go writes it: binary fields as `*64` in URL-safe base64 without padding unless
    /// they are printable text, empty fields left out.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        binary_field(&mut o, "i", &self.identifier);
        o.insert("s64".into(), Value::String(b64::url(&self.signature)));
        if !self.location.is_empty() {
            o.insert("l".into(), Value::String(self.location.clone()));
        }
        if !self.caveats.is_empty() {
            let cs = self
                .caveats
                .iter()
                .map(|c| {
                    let mut co = Map::new();
                    binary_field(&mut co, "i", &c.id);
                    if let Some(v) = &c.verification_id {
                        co.insert("v64".into(), Value::String(b64::url(v)));
                    }
                    if let Some(l) = c.location.as_deref().filter(|l| !l.is_empty()) {
                        co.insert("l".into(), json!(l));
                    }
                    Value::Object(co)
                })
                .collect();
            o.insert("c".into(), Value::Array(cs));
        }
        Value::Object(o)
    }

    /// The V2 binary form (agents present their login macaroons in it): `0x02`, then fields as
    /// type, uvarint length and data, sections closed by a zero byte.
    pub fn to_binary(&self) -> Vec<u8> {
        fn field(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
            out.push(kind);
            crate::codec::put_uvarint(data.len() as u64, out);
            out.extend_from_slice(data);
        }
        const LOCATION: u8 = 1;
        const IDENTIFIER: u8 = 2;
        const VID: u8 = 4;
        const SIGNATURE: u8 = 6;
        let mut out = vec![2];
        if !self.location.is_empty() {
            field(&mut out, LOCATION, self.location.as_bytes());
        }
        field(&mut out, IDENTIFIER, &self.identifier);
        out.push(0);
        for c in &self.caveats {
            if let Some(l) = c.location.as_deref().filter(|l| !l.is_empty()) {
                field(&mut out, LOCATION, l.as_bytes());
            }
            field(&mut out, IDENTIFIER, &c.id);
            if let Some(v) = &c.verification_id {
                field(&mut out, VID, v);
            }
            out.push(0);
        }
        out.push(0);
        field(&mut out, SIGNATURE, &self.signature);
        out
    }

    /// Reads V2 JSON in Go's or Python's style (`i`/`i64`, either base64 alphabet, `c` and `v`
    /// optional).
    pub fn from_json(v: &Value) -> Result<Macaroon, BakeryError> {
        let o = v
            .as_object()
            .ok_or(BakeryError::Malformed("not an object"))?;
        if let Some(ver) = o.get("v") {
            if ver.as_u64() != Some(2) {
                return Err(BakeryError::Malformed("not a V2 macaroon"));
            }
        }
        let identifier =
            read_binary(o, "i")?.ok_or(BakeryError::Malformed("missing identifier"))?;
        let sig = read_binary(o, "s")?.ok_or(BakeryError::Malformed("missing signature"))?;
        let signature: [u8; 32] = sig
            .try_into()
            .map_err(|_| BakeryError::Malformed("signature is not 32 bytes"))?;
        let location = read_text(o, "l")?.unwrap_or_default();
        let mut caveats = Vec::new();
        match o.get("c") {
            None | Some(Value::Null) => {}
            Some(Value::Array(cs)) => {
                for c in cs {
                    let co = c.as_object().ok_or(BakeryError::Malformed("caveat"))?;
                    caveats.push(Caveat {
                        id: read_binary(co, "i")?
                            .ok_or(BakeryError::Malformed("caveat without id"))?,
                        verification_id: read_binary(co, "v")?.filter(|v| !v.is_empty()),
                        location: read_text(co, "l")?.filter(|l| !l.is_empty()),
                    });
                }
            }
            Some(_) => return Err(BakeryError::Malformed("caveats")),
        }
        Ok(Macaroon {
            location,
            identifier,
            caveats,
            signature,
        })
    }

    /// Verifies this macaroon as the primary of `discharges`, from its root key. Every
    /// first-party condition of every macaroon is handed to `check`; every discharge must be
    /// used exactly once.
    pub fn verify(
        &self,
        root_key: &[u8],
        discharges: &[Macaroon],
        check: &mut dyn FnMut(&str) -> Result<(), String>,
    ) -> Result<(), BakeryError> {
        let mut used = vec![false; discharges.len()];
        verify_one(
            self,
            &derive_key(root_key),
            &self.signature,
            true,
            discharges,
            &mut used,
            check,
            0,
        )?;
        if used.iter().all(|u| *u) {
            Ok(())
        } else {
            Err(BakeryError::UnusedDischarge)
        }
    }
}

/// Discharges can carry third-party caveats of their own; nesting beyond this is refused.
const MAX_DEPTH: usize = 8;

#[allow(clippy::too_many_arguments)]
fn verify_one(
    m: &Macaroon,
    key: &[u8; 32],
    primary_sig: &[u8; 32],
    is_primary: bool,
    discharges: &[Macaroon],
    used: &mut [bool],
    check: &mut dyn FnMut(&str) -> Result<(), String>,
    depth: usize,
) -> Result<(), BakeryError> {
    if depth > MAX_DEPTH {
        return Err(BakeryError::Malformed("discharges nested too deep"));
    }
    let mut sig = hmac(key, &m.identifier);
    for c in &m.caveats {
        match &c.verification_id {
            None => {
                let cond = std::str::from_utf8(&c.id)
                    .map_err(|_| BakeryError::Caveat("condition is not UTF-8".into()))?;
                check(cond).map_err(BakeryError::Caveat)?;
                sig = hmac(&sig, &c.id);
            }
            Some(vid) => {
                if vid.len() < NONCE_LEN {
                    return Err(BakeryError::Malformed("verification id too short"));
                }
                let (nonce, sealed) = vid.split_at(NONCE_LEN);
                let caveat_key: [u8; 32] = XSalsa20Poly1305::new(&sig.into())
                    .decrypt(nonce.into(), sealed)
                    .map_err(|_| BakeryError::Decrypt)?
                    .try_into()
                    .map_err(|_| BakeryError::Malformed("discharge key length"))?;
                let idx = discharges
                    .iter()
                    .enumerate()
                    .position(|(i, d)| !used[i] && d.identifier == c.id)
                    .ok_or(BakeryError::MissingDischarge)?;
                used[idx] = true;
                verify_one(
                    &discharges[idx],
                    &caveat_key,
                    primary_sig,
                    false,
                    discharges,
                    used,
                    check,
                    depth + 1,
                )?;
                sig = third_party_sig(&sig, vid, &c.id);
            }
        }
    }
    if !is_primary {
        sig = bind_signature(primary_sig, &sig);
    }
    if bool::from(sig.ct_eq(&m.signature)) {
        Ok(())
    } else {
        Err(BakeryError::Signature)
    }
}

fn binary_field(o: &mut Map<String, Value>, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => {
            o.insert(name.into(), Value::String(s.to_owned()));
        }
        _ => {
            o.insert(format!("{name}64"), Value::String(b64::url(b)));
        }
    }
}

fn read_binary(o: &Map<String, Value>, name: &str) -> Result<Option<Vec<u8>>, BakeryError> {
    if let Some(v) = o.get(name) {
        return match v {
            Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
            _ => Err(BakeryError::Malformed("field is not a string")),
        };
    }
    match o.get(&format!("{name}64")) {
        None => Ok(None),
        Some(Value::String(s)) => b64::decode(s)
            .map(Some)
            .ok_or(BakeryError::Malformed("bad base64")),
        Some(_) => Err(BakeryError::Malformed("field is not a string")),
    }
}

fn read_text(o: &Map<String, Value>, name: &str) -> Result<Option<String>, BakeryError> {
    read_binary(o, name)?
        .map(|b| String::from_utf8(b).map_err(|_| BakeryError::Malformed("location")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &str) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn json_round_trip_and_both_styles() {
        let mut m = Macaroon::new(b"root", vec![3, 0, 255], "https://candid");
        m.add_first_party("time-before 2030-01-01T00:00:00Z");
        m.add_third_party(b"caveat-root", vec![3, 0], "https://candid");
        let j = m.to_json();
        assert!(j.get("i64").is_some() && j.get("v").is_none());
        assert_eq!(Macaroon::from_json(&j).unwrap(), m);
        // Python style: padded standard base64, top-level v.
        let mut py = j.as_object().unwrap().clone();
        py.insert("v".into(), json!(2));
        let s = py.remove("s64").unwrap();
        let sig = b64::decode(s.as_str().unwrap()).unwrap();
        py.insert("s64".into(), json!(b64::std(&sig)));
        assert_eq!(Macaroon::from_json(&Value::Object(py)).unwrap(), m);
        // An empty caveat location is no location (Go omits it): it reads back as written.
        let mut empty_l = j.clone();
        empty_l["c"][0]["l"] = json!("");
        let m2 = Macaroon::from_json(&empty_l).unwrap();
        assert_eq!(m2.caveats[0].location, None);
        assert_eq!(Macaroon::from_json(&m2.to_json()).unwrap(), m2);
        assert!(Macaroon::from_json(&json!({"i": "x"})).is_err());
        assert!(Macaroon::from_json(&json!({"i": "x", "s64": "AAAA"})).is_err());
        assert!(
            Macaroon::from_json(&json!({"i": "x", "s64": b64::url(&[0; 32]), "v": 1})).is_err()
        );
    }

    #[test]
    fn discharge_chain_verifies_only_when_bound_and_untampered() {
        let mut m = Macaroon::new(b"root", b"id".to_vec(), "");
        m.add_third_party(b"tp-root", vec![3, 0], "https://candid");
        m.add_first_party("a");
        let mut d = Macaroon::new(b"tp-root", vec![3, 0], "");
        d.add_first_party("declared username alice");
        let bound = d.bound_to(&m);
        let mut seen = Vec::new();
        let mut rec = |c: &str| {
            seen.push(c.to_owned());
            Ok(())
        };
        m.verify(b"root", std::slice::from_ref(&bound), &mut rec)
            .unwrap();
        assert_eq!(seen, ["declared username alice", "a"]);
        let mut ok = ok;
        // Unbound, wrong root, missing or extra discharge, tampered caveat.
        assert_eq!(
            m.verify(b"root", std::slice::from_ref(&d), &mut ok),
            Err(BakeryError::Signature)
        );
        assert_eq!(
            m.verify(b"wrong", std::slice::from_ref(&bound), &mut ok),
            Err(BakeryError::Decrypt)
        );
        assert_eq!(
            m.verify(b"root", &[], &mut ok),
            Err(BakeryError::MissingDischarge)
        );
        assert_eq!(
            m.verify(b"root", &[bound.clone(), bound.clone()], &mut ok),
            Err(BakeryError::UnusedDischarge)
        );
        let mut t = bound.clone();
        t.caveats[0].id = b"declared username mallory".to_vec();
        assert_eq!(
            m.verify(b"root", &[t], &mut ok),
            Err(BakeryError::Signature)
        );
        // A discharge bound to another primary.
        let mut other = Macaroon::new(b"root", b"id2".to_vec(), "");
        other.add_third_party(b"tp-root", vec![3, 0], "https://candid");
        assert_eq!(
            m.verify(b"root", &[d.bound_to(&other)], &mut ok),
            Err(BakeryError::Signature)
        );
        // A failing condition fails the whole.
        let mut no = |c: &str| {
            if c == "a" {
                Err("no".to_owned())
            } else {
                Ok(())
            }
        };
        assert!(matches!(
            m.verify(b"root", &[bound], &mut no),
            Err(BakeryError::Caveat(_))
        ));
    }
}
