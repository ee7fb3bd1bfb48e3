//! First-party conditions, as the bakery's standard checkers read them. Unknown conditions fail
//! (a caveat we do not understand is a restriction we cannot honour).

use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Accumulates what a verified slice declares while checking each condition.
#[derive(Debug, Default)]
pub struct Checker {
    now: Option<OffsetDateTime>,
    pub declared: BTreeMap<String, String>,
}

impl Checker {
    pub fn new(now: OffsetDateTime) -> Checker {
        Checker {
            now: Some(now),
            declared: BTreeMap::new(),
        }
    }

    pub fn check(&mut self, condition: &str) -> Result<(), String> {
        let (name, arg) = condition.split_once(' ').unwrap_or((condition, ""));
        match name {
            "time-before" => {
                let t = OffsetDateTime::parse(arg, &Rfc3339)
                    .map_err(|_| format!("cannot parse time-before {arg:?}"))?;
                match self.now {
                    Some(now) if now < t => Ok(()),
                    _ => Err("macaroon has expired".to_owned()),
                }
            }
            "declared" => {
                let (key, value) = arg
                    .split_once(' ')
                    .ok_or_else(|| "declared caveat has no value".to_owned())?;
                match self.declared.get(key) {
                    Some(v) if v != value => Err(format!("{key} declared twice, differently")),
                    _ => {
                        self.declared.insert(key.to_owned(), value.to_owned());
                        Ok(())
                    }
                }
            }
            "error" => Err(format!("caveat error: {arg}")),
            _ => Err(format!(
                "caveat {condition:?} not satisfied: unknown condition"
            )),
        }
    }
}

/// `time-before` text for an instant, RFC 3339 in UTC as Go writes it.
pub fn time_before(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "time-before {}",
        t.format(&Rfc3339).expect("UTC instants always format")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn every_condition_kind() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let cases: &[(&[&str], bool)] = &[
            (&["time-before 2026-06-01T12:00:01Z"], true),
            (&["time-before 2026-06-01T12:00:00.000000001Z"], true),
            (&["time-before 2026-06-01T12:00:00Z"], false),
            (&["time-before 2026-06-01T13:00:00+02:00"], false),
            (&["time-before yesterday"], false),
            (&["declared username alice"], true),
            (
                &["declared username alice", "declared username alice"],
                true,
            ),
            (&["declared username alice", "declared username bob"], false),
            (&["declared username"], false),
            (&["error nope"], false),
            (&["allow login"], false),
            (&["http:client-ip-addr 127.0.0.1"], false),
            (&[""], false),
        ];
        for (conds, want) in cases {
            let mut c = Checker::new(now);
            let got = conds.iter().all(|x| c.check(x).is_ok());
            assert_eq!(got, *want, "{conds:?}");
        }
        let mut c = Checker::new(now);
        c.check("declared username alice@example").unwrap();
        assert_eq!(c.declared["username"], "alice@example");
    }

    #[test]
    fn time_before_is_utc_rfc3339() {
        assert_eq!(
            time_before(datetime!(2026-06-01 14:00 +02:00)),
            "time-before 2026-06-01T12:00:00Z"
        );
    }
}
