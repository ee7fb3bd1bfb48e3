//! What clients send with a request, decoded as the daemon decodes it: the JSON body of every
//! endpoint that takes one (`rxd_daemon::fuzzing::REQUEST_BODIES`), the query strings the
//! handlers read, and the numeric headers of the files API. The first byte picks the decoder
//! (below 0xe0: a body type; 0xe0..0xf0: a query; above: a files header); the rest is the input.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use rxd_daemon::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which {
        0..0xe0 => {
            let _ = fuzzing::decode_request_body(which, rest);
        }
        0xe0..0xf0 => {
            if let Ok(q) = std::str::from_utf8(rest) {
                let _ = fuzzing::decode_query(which, q);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Some(n) = fuzzing::file_header_int(text) {
                    // Plain decimal text must read back as itself.
                    if text == n.to_string() && !text.starts_with('0') {
                        assert_eq!(fuzzing::file_header_int(&n.to_string()), Some(n));
                    }
                }
            }
        }
    }
});
