//! The bakery's JSON shapes on the wire: the wrapped macaroon, the 401 challenge, and the
//! discharger's answers. Field names are go-macaroon-bakery's (capitalised, empty ones left out).

use crate::macaroon::Macaroon;
use crate::{b64, BakeryError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A macaroon as the bakery hands it out: the macaroon, the bakery version, the checker
/// namespace, and the encrypted payload of each third-party caveat keyed by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeryMacaroon {
    pub macaroon: Macaroon,
    pub version: u8,
    pub namespace: String,
    /// caveat id → payload.
    pub caveat_data: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl BakeryMacaroon {
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("m".into(), self.macaroon.to_json());
        o.insert("v".into(), Value::from(self.version));
        if !self.namespace.is_empty() {
            o.insert("ns".into(), Value::String(self.namespace.clone()));
        }
        if !self.caveat_data.is_empty() {
            let cdata = self
                .caveat_data
                .iter()
                .map(|(k, v)| (b64::url(k), Value::String(b64::std(v))))
                .collect();
            o.insert("cdata".into(), Value::Object(cdata));
        }
        Value::Object(o)
    }

    /// Reads a wrapped macaroon, or a bare V2 one (what discharges and cookies may carry).
    pub fn from_json(v: &Value) -> Result<BakeryMacaroon, BakeryError> {
        let Some(m) = v.get("m") else {
            return Ok(BakeryMacaroon {
                macaroon: Macaroon::from_json(v)?,
                version: 2,
                namespace: String::new(),
                caveat_data: BTreeMap::new(),
            });
        };
        let version = v
            .get("v")
            .and_then(Value::as_u64)
            .ok_or(BakeryError::Malformed("bakery version"))?;
        if !(3..=3).contains(&version) {
            return Err(BakeryError::Malformed("unsupported bakery version"));
        }
        let mut caveat_data = BTreeMap::new();
        if let Some(cd) = v.get("cdata").and_then(Value::as_object) {
            for (k, val) in cd {
                let key = b64::decode(k).ok_or(BakeryError::Malformed("cdata key"))?;
                let data = val
                    .as_str()
                    .and_then(b64::decode)
                    .ok_or(BakeryError::Malformed("cdata value"))?;
                caveat_data.insert(key, data);
            }
        }
        Ok(BakeryMacaroon {
            macaroon: Macaroon::from_json(m)?,
            version: version as u8,
            namespace: v
                .get("ns")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            caveat_data,
        })
    }
}

pub const DISCHARGE_REQUIRED: &str = "macaroon discharge required";
pub const INTERACTION_REQUIRED: &str = "interaction required";

/// The bakery's error body: `{"Code", "Message", "Info"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BakeryErrorBody {
    #[serde(rename = "Code", default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(rename = "Message", default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(rename = "Info", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ErrorInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// For `macaroon discharge required`: the macaroon to discharge (bakery JSON).
    #[serde(rename = "Macaroon", default, skip_serializing_if = "Option::is_none")]
    pub macaroon: Option<Value>,
    #[serde(
        rename = "MacaroonPath",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub macaroon_path: String,
    #[serde(
        rename = "CookieNameSuffix",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cookie_name_suffix: String,
    /// For `interaction required`: method name → its parameters.
    #[serde(
        rename = "InteractionMethods",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interaction_methods: Option<BTreeMap<String, Value>>,
    #[serde(rename = "VisitURL", default, skip_serializing_if = "String::is_empty")]
    pub visit_url: String,
    #[serde(rename = "WaitURL", default, skip_serializing_if = "String::is_empty")]
    pub wait_url: String,
}

/// The relative path from `request_path` back to `/`, which is where the login cookie belongs
/// (`.` for `/1.0`, `../` for `/1.0/instances`).
pub fn macaroon_path(request_path: &str) -> String {
    let depth = request_path
        .trim_start_matches('/')
        .split('/')
        .count()
        .saturating_sub(1);
    if depth == 0 {
        ".".to_owned()
    } else {
        "../".repeat(depth)
    }
}

/// A token from an interaction, to be presented with the next discharge request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DischargeToken {
    pub kind: String,
    /// Base64 (the discharger's encoding of the token bytes).
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macaroon_path_walks_back_to_root() {
        assert_eq!(macaroon_path("/1.0"), ".");
        assert_eq!(macaroon_path("/1.0/instances"), "../");
        assert_eq!(macaroon_path("/1.0/instances/c1/state"), "../../../");
        assert_eq!(macaroon_path("/"), ".");
    }

    #[test]
    fn wrapper_round_trip() {
        let mut m = Macaroon::new(b"k", vec![3, 1, 2], "loc");
        m.add_third_party(b"r", vec![3, 0], "https://candid");
        let mut cd = BTreeMap::new();
        cd.insert(vec![3, 0], vec![1, 2, 3]);
        let bm = BakeryMacaroon {
            macaroon: m,
            version: 3,
            namespace: "http:http std:".into(),
            caveat_data: cd,
        };
        let j = bm.to_json();
        assert_eq!(j["cdata"]["AwA"], "AQID");
        assert_eq!(BakeryMacaroon::from_json(&j).unwrap(), bm);
        let bare = BakeryMacaroon::from_json(&j["m"]).unwrap();
        assert_eq!(bare.macaroon, bm.macaroon);
    }
}
