//! The frames the daemon writes to the helper's terminal relay (`rxd-shim exec` with a
//! terminal): `[kind: u8][len: u32 BE][payload]`, kind 0 for input bytes, kind 1 for a window
//! size (`[cols: u16 BE][rows: u16 BE]`). Both sides use this module, so the format is written
//! once.

use std::io::Read;

const KIND_DATA: u8 = 0;
const KIND_RESIZE: u8 = 1;
/// The largest payload a reader accepts; the daemon never writes more in one frame.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One frame, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the terminal's input.
    Data(Vec<u8>),
    /// A new window size, in columns and rows.
    Resize { cols: u16, rows: u16 },
    /// A kind this version does not know: skipped.
    Unknown,
}

/// Input bytes for the terminal, as one or more frames of at most [`MAX_PAYLOAD`] bytes.
pub fn data(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 5);
    for chunk in bytes.chunks(MAX_PAYLOAD) {
        push(&mut out, KIND_DATA, chunk);
    }
    out
}

/// A window size; each dimension is clamped to 1..=65535.
pub fn resize(cols: u32, rows: u32) -> Vec<u8> {
    let clamp = |v: u32| v.clamp(1, u32::from(u16::MAX)) as u16;
    let mut size = [0u8; 4];
    size[..2].copy_from_slice(&clamp(cols).to_be_bytes());
    size[2..].copy_from_slice(&clamp(rows).to_be_bytes());
    let mut out = Vec::with_capacity(9);
    push(&mut out, KIND_RESIZE, &size);
    out
}

fn push(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Why reading frames stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The stream ended, cleanly or in the middle of a frame.
    Closed,
    /// A frame announced more than [`MAX_PAYLOAD`] bytes: not from the daemon, so the rest of
    /// the stream cannot be trusted.
    Oversized,
}

/// The next frame from `from`.
pub fn read(from: &mut impl Read) -> Result<Frame, ReadEnd> {
    let mut header = [0u8; 5];
    from.read_exact(&mut header).map_err(|_| ReadEnd::Closed)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(ReadEnd::Oversized);
    }
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload).map_err(|_| ReadEnd::Closed)?;
    Ok(match (header[0], payload.as_slice()) {
        (KIND_DATA, _) => Frame::Data(payload),
        (KIND_RESIZE, [c0, c1, r0, r1]) => Frame::Resize {
            cols: u16::from_be_bytes([*c0, *c1]),
            rows: u16::from_be_bytes([*r0, *r1]),
        },
        _ => Frame::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut bytes: &[u8]) -> (Vec<Frame>, ReadEnd) {
        let mut frames = Vec::new();
        loop {
            match read(&mut bytes) {
                Ok(f) => frames.push(f),
                Err(end) => return (frames, end),
            }
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut stream = data(b"ls -l\n");
        stream.extend(resize(80, 24));
        // Nothing to write is no frame at all.
        stream.extend(data(b""));
        let (frames, end) = read_all(&stream);
        assert_eq!(
            frames,
            [
                Frame::Data(b"ls -l\n".to_vec()),
                Frame::Resize { cols: 80, rows: 24 },
            ]
        );
        assert_eq!(end, ReadEnd::Closed);
    }

    #[test]
    fn sizes_are_clamped() {
        for (cols, rows, want) in [
            (0, 0, (1, 1)),
            (200, 50, (200, 50)),
            (70_000, u32::MAX, (u16::MAX, u16::MAX)),
        ] {
            let (frames, _) = read_all(&resize(cols, rows));
            assert_eq!(
                frames,
                [Frame::Resize {
                    cols: want.0,
                    rows: want.1
                }],
                "{cols}x{rows}"
            );
        }
    }

    #[test]
    fn large_input_is_split_into_readable_frames() {
        let big = vec![7u8; MAX_PAYLOAD * 2 + 3];
        let (frames, end) = read_all(&data(&big));
        let lens: Vec<usize> = frames
            .iter()
            .map(|f| match f {
                Frame::Data(d) => d.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lens, [MAX_PAYLOAD, MAX_PAYLOAD, 3]);
        assert_eq!(end, ReadEnd::Closed);
    }

    #[test]
    fn hostile_frames_stop_the_reader() {
        let mut oversized = vec![0u8];
        oversized.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert_eq!(read_all(&oversized), (vec![], ReadEnd::Oversized));
        // A truncated payload, a resize of the wrong size and an unknown kind.
        assert_eq!(read_all(&[0, 0, 0, 0, 9, 1]), (vec![], ReadEnd::Closed));
        assert_eq!(
            read_all(&[1, 0, 0, 0, 2, 0, 80, 9, 0, 0, 0, 0]).0,
            [Frame::Unknown, Frame::Unknown]
        );
    }
}
