//! Base64 as the bakery writes it (Go: URL-safe, no padding; Python: standard, padded) and reads
//! it (either alphabet, padded or not).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// Decodes either alphabet, with or without padding.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    let normalized: String = trimmed
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(normalized).ok()
}

/// URL-safe without padding (Go's choice, used for everything we emit inside macaroons).
pub fn url(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Standard alphabet with padding (cookie values and `cdata` payloads).
pub fn std(b: &[u8]) -> String {
    STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alphabet_and_padding() {
        let bytes = [0xfbu8, 0xff, 0x03, 0x00];
        for s in ["+/8DAA==", "+/8DAA", "-_8DAA==", "-_8DAA"] {
            assert_eq!(decode(s).as_deref(), Some(&bytes[..]), "{s}");
        }
        assert_eq!(decode("not base64!"), None);
        assert_eq!(decode(&url(&bytes)).as_deref(), Some(&bytes[..]));
        assert_eq!(decode(&std(&bytes)).as_deref(), Some(&bytes[..]));
    }
}
