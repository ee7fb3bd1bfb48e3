//! LXD's expiry strings (`core.remote_token_expiry`): space-separated `<N><unit>` with units
//! S (seconds), M (minutes), H (hours), d (days), w (weeks), m (months, 30 days), y (years, 365 days).

use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid expiry {0:?}: expected values like \"30M\", \"12H\" or \"1d 12H\" (units S M H d w m y)")]
pub struct ExpiryError(pub String);

pub fn parse_expiry(s: &str) -> Result<Duration, ExpiryError> {
    let err = || ExpiryError(s.to_owned());
    let mut total: u64 = 0;
    let mut any = false;
    for part in s.split_whitespace() {
        let unit = part.chars().last().ok_or_else(err)?;
        let n: u64 = part[..part.len() - unit.len_utf8()]
            .parse()
            .map_err(|_| err())?;
        let secs = match unit {
            'S' => 1,
            'M' => 60,
            'H' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'm' => 30 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(err()),
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        any = true;
    }
    if !any || total == 0 {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<u64>) {
        assert_eq!(
            parse_expiry(input).ok().map(|d| d.as_secs()),
            expected,
            "{input}"
        );
    }

    #[test]
    fn expiry_table() {
        check("30S", Some(30));
        check("5M", Some(300));
        check("12H", Some(43_200));
        check("1d 12H", Some(129_600));
        check("2w", Some(1_209_600));
        check("1m", Some(2_592_000));
        check("1y", Some(31_536_000));
        check("", None);
        check("0S", None);
        check("5", None);
        check("5x", None);
        check("H", None);
        check("-5S", None);
        check("99999999999999999y", None);
    }
}
