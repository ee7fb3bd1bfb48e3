//! LXD's `?filter=` expressions (extension `api_filtering`): clauses `FIELD eq|ne VALUE`, each
//! optionally preceded by `not`, joined by `and` and `or` (`and` binds tighter). FIELD may be a
//! dotted path into the object (`config.image.os`); values may be quoted; comparison ignores case,
//! as LXD's does.

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid filter {0:?}: expected clauses like `name eq c1` joined by `and` / `or`")]
pub struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    negate: bool,
    field: Vec<String>,
    equal: bool,
    value: String,
}

/// A parsed filter: OR of ANDs of clauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter(Vec<Vec<Clause>>);

fn tokens(s: &str) -> Result<Vec<String>, FilterError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut t = String::new();
            loop {
                match chars.next() {
                    Some(q) if q == c => break,
                    Some(x) => t.push(x),
                    None => return Err(FilterError(s.into())),
                }
            }
            out.push(t);
        } else {
            let mut t = String::new();
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() {
                    break;
                }
                t.push(x);
                chars.next();
            }
            out.push(t);
        }
    }
    Ok(out)
}

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, FilterError> {
        let err = || FilterError(s.into());
        let toks = tokens(s)?;
        let mut ors: Vec<Vec<Clause>> = vec![Vec::new()];
        let mut i = 0;
        while i < toks.len() {
            let negate = toks[i].eq_ignore_ascii_case("not");
            if negate {
                i += 1;
            }
            let (field, op, value) = match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
                (Some(f), Some(o), Some(v)) => (f, o.to_ascii_lowercase(), v),
                _ => return Err(err()),
            };
            let equal = match op.as_str() {
                "eq" => true,
                "ne" => false,
                _ => return Err(err()),
            };
            let field: Vec<String> = field.split('.').map(str::to_owned).collect();
            if field.iter().any(String::is_empty) {
                return Err(err());
            }
            ors.last_mut().ok_or_else(err)?.push(Clause {
                negate,
                field,
                equal,
                value: value.clone(),
            });
            i += 3;
            match toks.get(i).map(|t| t.to_ascii_lowercase()) {
                None => break,
                Some(j) if j == "and" => i += 1,
                Some(j) if j == "or" => {
                    ors.push(Vec::new());
                    i += 1;
                }
                Some(_) => return Err(err()),
            }
            if i >= toks.len() {
                return Err(err());
            }
        }
        if ors.iter().any(Vec::is_empty) {
            return Err(err());
        }
        Ok(Filter(ors))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0
            .iter()
            .any(|all| all.iter().all(|c| c.matches(object)))
    }
}

impl Clause {
    fn matches(&self, object: &Value) -> bool {
        // Config keys contain dots (`image.os`): after `config`, the rest is one key.
        let mut v = object;
        let mut rest = self.field.as_slice();
        while let Some((head, tail)) = rest.split_first() {
            if let Some(next) = v.get(head) {
                v = next;
                rest = tail;
            } else {
                let joined = rest.join(".");
                v = v.get(&joined).unwrap_or(&Value::Null);
                break;
            }
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (text.eq_ignore_ascii_case(&self.value) == self.equal) != self.negate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filter_table() {
        let c1 = json!({"name": "c1", "status": "Running", "config": {"image.os": "busybox"}, "ephemeral": false});
        let cases: &[(&str, Option<bool>)] = &[
            ("name eq c1", Some(true)),
            ("name eq C1", Some(true)),
            ("name eq c2", Some(false)),
            ("name ne c2", Some(true)),
            ("not name eq c1", Some(false)),
            ("name eq c2 or status eq running", Some(true)),
            ("name eq c1 and status eq stopped", Some(false)),
            ("name eq c2 and status eq running or name eq c1", Some(true)),
            ("config.image.os eq busybox", Some(true)),
            ("ephemeral eq false", Some(true)),
            ("name eq \"c1\"", Some(true)),
            ("missing eq ''", Some(true)),
            ("name", None),
            ("name eq", None),
            ("name gt c1", None),
            ("name eq c1 and", None),
            ("name eq c1 xor name eq c2", None),
            ("name eq \"c1", None),
            ("a..b eq c", None),
        ];
        for (f, want) in cases {
            match (Filter::parse(f), want) {
                (Ok(p), Some(w)) => assert_eq!(p.matches(&c1), *w, "{f}"),
                (Err(_), None) => {}
                (got, _) => panic!("{f}: {got:?}"),
            }
        }
    }
}
