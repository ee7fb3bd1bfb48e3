//! Text messages on the exec and console control websockets, judged as the handlers judge them:
//! a `signal` in 1..=64 is sent, a `window-resize` with numeric `width` and `height` becomes a
//! five-byte-header frame for the terminal relay, anything else is ignored.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use rxd_daemon::fuzzing::{control_frame, ControlAction};

fuzz_target!(|data: &[u8]| {
    // Websocket text messages are UTF-8 (tungstenite refuses others before the handler).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match control_frame(text) {
        ControlAction::Signal(s) => assert!((1..=64).contains(&s)),
        ControlAction::Resize(frame) => {
            // kind 1, length 4, columns and rows each clamped to 1..=65535.
            assert_eq!(frame.len(), 9);
            assert_eq!(&frame[..5], &[1, 0, 0, 0, 4]);
            assert_ne!(u16::from_be_bytes([frame[5], frame[6]]), 0);
            assert_ne!(u16::from_be_bytes([frame[7], frame[8]]), 0);
        }
        ControlAction::Ignore => {}
    }
});
