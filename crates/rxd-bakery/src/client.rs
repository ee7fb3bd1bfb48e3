//! The client's side: what to send a discharger for each third-party caveat, agents' local
//! discharges, and when a login expires.

use crate::checkers::Checker;
use crate::codec::{self, KeyPair};
use crate::macaroon::Macaroon;
use crate::wire::{BakeryMacaroon, DischargeToken};
use crate::{b64, BakeryError};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One third-party caveat to discharge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub caveat_id: Vec<u8>,
    pub location: String,
    /// The encrypted payload: from `cdata` (v3), or the caveat id itself (older versions).
    pub payload: Vec<u8>,
}

/// The third-party caveats of `bm` that need discharges.
pub fn pending(bm: &BakeryMacaroon) -> Vec<Pending> {
    bm.macaroon
        .caveats
        .iter()
        .filter(|c| c.is_third_party())
        .map(|c| Pending {
            caveat_id: c.id.clone(),
            location: c.location.clone().unwrap_or_default(),
            payload: bm
                .caveat_data
                .get(&c.id)
                .cloned()
                .unwrap_or_else(|| c.id.clone()),
        })
        .collect()
}

/// The form fields of `POST <location>/discharge`.
pub fn discharge_form(p: &Pending, token: Option<&DischargeToken>) -> Vec<(String, String)> {
    let mut f = Vec::new();
    match std::str::from_utf8(&p.caveat_id) {
        Ok(s) if !s.chars().any(char::is_control) => f.push(("id".into(), s.to_owned())),
        _ => f.push(("id64".into(), b64::url(&p.caveat_id))),
    }
    if p.payload != p.caveat_id {
        f.push(("caveat64".into(), b64::url(&p.payload)));
    }
    if let Some(t) = token {
        f.push(("token64".into(), t.value.clone()));
        f.push(("token-kind".into(), t.kind.clone()));
    }
    f
}

/// Is this caveat addressed to the client itself ("local" caveats of the agent protocol)?
pub fn is_local(location: &str) -> bool {
    location == "local" || location.starts_with("local ")
}

/// Discharges a local caveat with the agent's own key: the payload must be addressed to it.
pub fn local_discharge(p: &Pending, agent: &KeyPair) -> Result<Macaroon, BakeryError> {
    let info = codec::decode(&p.payload, agent)?;
    Ok(Macaroon::new(&info.root_key, p.caveat_id.clone(), ""))
}

/// When the earliest `time-before` of a slice falls, if any does.
pub fn expiry(slice: &[Macaroon]) -> Option<OffsetDateTime> {
    slice
        .iter()
        .flat_map(Macaroon::first_party_conditions)
        .filter_map(|c| {
            let t = c.strip_prefix("time-before ")?.to_owned();
            OffsetDateTime::parse(&t, &Rfc3339).ok()
        })
        .min()
}

/// Whether a slice is still usable at `now` by its own time caveats (the server decides the rest).
pub fn still_valid(slice: &[Macaroon], now: OffsetDateTime) -> bool {
    expiry(slice).is_none_or(|t| now < t)
}

/// The user a slice's discharges declare (for display; the server's verdict is what counts).
pub fn declared_user(slice: &[Macaroon]) -> Option<String> {
    let mut c = Checker::default();
    for cond in slice.iter().flat_map(Macaroon::first_party_conditions) {
        if cond.starts_with("declared ") {
            c.check(&cond).ok()?;
        }
    }
    c.declared.remove("username")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::{mint, ThirdParty};
    use time::Duration;

    #[test]
    fn pending_and_form_fields() {
        let (ours, candid) = (KeyPair::generate(), KeyPair::generate());
        let tp = ThirdParty {
            location: "http://127.0.0.1:1".into(),
            public_key: candid.public(),
        };
        let exp = OffsetDateTime::now_utc() + Duration::minutes(5);
        let bm = mint(&[1; 16], &[2; 32], &tp, &ours, exp);
        let p = pending(&bm);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].caveat_id, vec![3, 0]);
        assert_eq!(p[0].location, "http://127.0.0.1:1");
        let tok = DischargeToken {
            kind: "form".into(),
            value: "dG9r".into(),
        };
        let f = discharge_form(&p[0], Some(&tok));
        assert_eq!(f[0], ("id64".to_owned(), "AwA".to_owned()));
        assert_eq!(f[1].0, "caveat64");
        assert_eq!(f[2], ("token64".to_owned(), "dG9r".to_owned()));
        assert_eq!(f[3], ("token-kind".to_owned(), "form".to_owned()));
        let e = expiry(std::slice::from_ref(&bm.macaroon)).unwrap();
        assert!((e - exp).abs() < Duration::seconds(1));
        assert!(still_valid(
            std::slice::from_ref(&bm.macaroon),
            OffsetDateTime::now_utc()
        ));
        assert!(!still_valid(
            std::slice::from_ref(&bm.macaroon),
            exp + Duration::seconds(1)
        ));
        // A local caveat opened by the agent it is addressed to, and by no one else.
        let agent = KeyPair::generate();
        let payload = codec::encode("is-ok", b"rk", "std:", &agent.public(), &ours);
        let lp = Pending {
            caveat_id: vec![3, 0],
            location: "local 3 xyz".into(),
            payload,
        };
        assert!(is_local(&lp.location));
        assert!(local_discharge(&lp, &agent).is_ok());
        assert!(local_discharge(&lp, &candid).is_err());
    }
}
