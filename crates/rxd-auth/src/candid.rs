//! Whom a verified Candid login names. The macaroon layer (`rxd-bakery`) proves that the
//! authentication server declared a user name; this decides whether that name is acceptable
//! under `candid.domains`, and makes the identity.

use crate::Identity;
use thiserror::Error;

/// Why a login that verified is still refused. The texts are LXD's; LXD answers them with 500,
/// rxd with 403.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CandidRefusal {
    #[error("Missing domain in candid reply")]
    MissingDomain,
    #[error("Untrusted candid domain")]
    UntrustedDomain,
    #[error("Invalid candid user name")]
    BadName,
}

const MAX_NAME: usize = 256;

/// The identity for a declared `username`. With `domains` non-empty, the name must be
/// `user@domain` with a listed domain (compared exactly, ASCII case-insensitively).
pub fn identify(
    username: &str,
    groups: Vec<String>,
    domains: &[String],
) -> Result<Identity, CandidRefusal> {
    if username.is_empty()
        || username.len() > MAX_NAME
        || username
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(CandidRefusal::BadName);
    }
    if !domains.is_empty() {
        let (user, domain) = username
            .split_once('@')
            .ok_or(CandidRefusal::MissingDomain)?;
        if user.is_empty() || domain.is_empty() {
            return Err(CandidRefusal::MissingDomain);
        }
        if !domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(CandidRefusal::UntrustedDomain);
        }
    }
    Ok(Identity::Candid {
        username: username.to_owned(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CandidRefusal::*;

    #[test]
    fn every_name_against_every_domain_rule() {
        let none: &[&str] = &[];
        let ex: &[&str] = &["example.com"];
        let two: &[&str] = &["example.com", "staff.example.org"];
        let cases: &[(&str, &[&str], Result<(), CandidRefusal>)] = &[
            ("alice", none, Ok(())),
            ("alice@anywhere", none, Ok(())),
            ("", none, Err(BadName)),
            ("al ice", none, Err(BadName)),
            ("al\nice", none, Err(BadName)),
            ("alice@example.com", ex, Ok(())),
            ("alice@EXAMPLE.com", ex, Ok(())),
            ("alice", ex, Err(MissingDomain)),
            ("alice@", ex, Err(MissingDomain)),
            ("@example.com", ex, Err(MissingDomain)),
            ("alice@evil.com", ex, Err(UntrustedDomain)),
            ("alice@sub.example.com", ex, Err(UntrustedDomain)),
            ("alice@example.com.evil", ex, Err(UntrustedDomain)),
            ("alice@evil.com@example.com", ex, Err(UntrustedDomain)),
            ("bob@staff.example.org", two, Ok(())),
            ("bob@example.org", two, Err(UntrustedDomain)),
        ];
        for (name, domains, want) in cases {
            let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
            let got = identify(name, vec!["g".into()], &domains);
            match (got, want) {
                (Ok(Identity::Candid { username, groups }), Ok(())) => {
                    assert_eq!(username, *name);
                    assert_eq!(groups, ["g"]);
                }
                (Err(e), Err(w)) => assert_eq!(e, *w, "{name} {domains:?}"),
                (got, _) => panic!("{name} {domains:?}: {got:?}"),
            }
        }
        let long = "a".repeat(MAX_NAME + 1);
        assert_eq!(identify(&long, vec![], &[]), Err(BadName));
    }
}
