//! go-macaroon-bakery's v3 macaroon identifier: the byte `0x03`, then the protobuf encoding of
//! its `MacaroonId` message (`nonce` bytes = 1, `storageId` bytes = 2, repeated `Op ops` = 3;
//! `Op` is `entity` string = 1, repeated `actions` string = 2).
//!
//! Go and Python bakeries read every identifier that starts with `0x03` this way, even in
//! macaroons that are not theirs (a client sends the daemon's cookie to Candid when both share
//! a host name), and Go treats one that does not parse as an error, not as a stranger's
//! macaroon to ignore. So the daemon's login identifiers are written in this layout.
//!
//! Hand-written (three fields, length-delimited only) rather than through a protobuf crate. The
//! decoder is strict: it accepts exactly the canonical encoding the encoder writes (fields in
//! order, empty singular fields omitted, minimal varints, no unknown fields, UTF-8 strings), so
//! `encode(decode(b)) == b` for every accepted `b`. It only ever has to read identifiers this
//! daemon minted.

use crate::BakeryError;

/// The identifier format version go-macaroon-bakery calls `Version3`.
pub const VERSION: u8 = 3;
/// Bounds that no identifier of ours comes near; they keep a hostile one cheap to refuse.
const MAX_OPS: usize = 16;
const MAX_ACTIONS: usize = 16;

/// One operation a macaroon grants: an entity and the actions allowed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub entity: String,
    pub actions: Vec<String>,
}

/// A decoded v3 identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacaroonId {
    pub nonce: Vec<u8>,
    /// Names the root key in the minter's store.
    pub storage_id: Vec<u8>,
    pub ops: Vec<Op>,
}

const WIRE_LEN: u64 = 2;

fn malformed(why: &'static str) -> BakeryError {
    BakeryError::Malformed(why)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    put_varint(out, field << 3 | WIRE_LEN);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

impl MacaroonId {
    /// `0x03` then the message, as Go's `proto.Marshal` writes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        if !self.nonce.is_empty() {
            put_field(&mut out, 1, &self.nonce);
        }
        if !self.storage_id.is_empty() {
            put_field(&mut out, 2, &self.storage_id);
        }
        for op in &self.ops {
            let mut o = Vec::new();
            if !op.entity.is_empty() {
                put_field(&mut o, 1, op.entity.as_bytes());
            }
            for a in &op.actions {
                put_field(&mut o, 2, a.as_bytes());
            }
            put_field(&mut out, 3, &o);
        }
        out
    }

    /// Reads an identifier written by [`MacaroonId::encode`]; anything else is refused.
    pub fn decode(identifier: &[u8]) -> Result<MacaroonId, BakeryError> {
        let (&version, mut rest) = identifier
            .split_first()
            .ok_or(malformed("empty macaroon id"))?;
        if version != VERSION {
            return Err(malformed("macaroon id is not version 3"));
        }
        let mut id = MacaroonId {
            nonce: Vec::new(),
            storage_id: Vec::new(),
            ops: Vec::new(),
        };
        let mut last = 0;
        while !rest.is_empty() {
            let (field, data) = next_field(&mut rest, last, 3)?;
            last = field;
            match field {
                1 => id.nonce = data.to_vec(),
                2 => id.storage_id = data.to_vec(),
                3 if id.ops.len() < MAX_OPS => id.ops.push(decode_op(data)?),
                3 => return Err(malformed("macaroon id: too many ops")),
                _ => return Err(malformed("macaroon id: unknown field")),
            }
        }
        Ok(id)
    }
}

fn decode_op(mut rest: &[u8]) -> Result<Op, BakeryError> {
    let mut op = Op {
        entity: String::new(),
        actions: Vec::new(),
    };
    let mut last = 0;
    while !rest.is_empty() {
        let (field, data) = next_field(&mut rest, last, 2)?;
        last = field;
        let text = std::str::from_utf8(data)
            .map_err(|_| malformed("macaroon id: op string is not UTF-8"))?
            .to_owned();
        match field {
            1 => op.entity = text,
            2 if op.actions.len() < MAX_ACTIONS => op.actions.push(text),
            2 => return Err(malformed("macaroon id: too many actions")),
            _ => return Err(malformed("macaroon id: unknown op field")),
        }
    }
    Ok(op)
}

/// The next length-delimited field of `rest`, in canonical order after field `last`: numbers
/// only grow, except that the message's one repeated field may recur; a singular field is never
/// written empty. Which numbers are known is the caller's business.
fn next_field<'a>(
    rest: &mut &'a [u8],
    last: u64,
    repeated: u64,
) -> Result<(u64, &'a [u8]), BakeryError> {
    let tag = varint(rest)?;
    let (field, wire) = (tag >> 3, tag & 7);
    if wire != WIRE_LEN {
        return Err(malformed("macaroon id: unexpected wire type"));
    }
    if field == 0 || field < last || (field == last && field != repeated) {
        return Err(malformed("macaroon id: fields out of order"));
    }
    let len = usize::try_from(varint(rest)?).map_err(|_| malformed("macaroon id: truncated"))?;
    if len > rest.len() {
        return Err(malformed("macaroon id: truncated"));
    }
    let (data, tail) = rest.split_at(len);
    if data.is_empty() && field != repeated {
        return Err(malformed("macaroon id: empty field written"));
    }
    *rest = tail;
    Ok((field, data))
}

/// A minimal unsigned varint of at most 64 bits.
fn varint(rest: &mut &[u8]) -> Result<u64, BakeryError> {
    let mut n: u64 = 0;
    for i in 0..10 {
        let (&b, tail) = rest
            .split_first()
            .ok_or(malformed("macaroon id: truncated"))?;
        *rest = tail;
        if i == 9 && b > 1 {
            return Err(malformed("macaroon id: varint overflow"));
        }
        n |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            if b == 0 && i > 0 {
                return Err(malformed("macaroon id: varint not minimal"));
            }
            return Ok(n);
        }
    }
    Err(malformed("macaroon id: varint overflow"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login_id() -> MacaroonId {
        MacaroonId {
            nonce: vec![0xaa; 16],
            storage_id: vec![0xbb; 16],
            ops: vec![Op {
                entity: "login".into(),
                actions: vec!["login".into()],
            }],
        }
    }

    #[test]
    fn encodes_as_protobuf_writes_it() {
        let mut want = vec![3, 0x0a, 16];
        want.extend([0xaa; 16]);
        want.extend([0x12, 16]);
        want.extend([0xbb; 16]);
        want.extend([0x1a, 14, 0x0a, 5]);
        want.extend(b"login");
        want.extend([0x12, 5]);
        want.extend(b"login");
        assert_eq!(login_id().encode(), want);
        assert_eq!(MacaroonId::decode(&want), Ok(login_id()));
        // Empty singular fields are omitted; an empty op and an empty action are still written.
        let sparse = MacaroonId {
            nonce: vec![],
            storage_id: vec![1],
            ops: vec![
                Op {
                    entity: String::new(),
                    actions: vec![],
                },
                Op {
                    entity: "e".into(),
                    actions: vec![String::new(), "a".into()],
                },
            ],
        };
        let b = sparse.encode();
        assert_eq!(
            b,
            [3, 0x12, 1, 1, 0x1a, 0, 0x1a, 8, 0x0a, 1, b'e', 0x12, 0, 0x12, 1, b'a']
        );
        assert_eq!(MacaroonId::decode(&b), Ok(sparse));
        // A length that needs two varint bytes.
        let long = MacaroonId {
            nonce: vec![7; 200],
            ..login_id()
        };
        assert_eq!(&long.encode()[..4], [3, 0x0a, 0xc8, 0x01]);
        assert_eq!(MacaroonId::decode(&long.encode()), Ok(long));
    }

    #[test]
    fn refuses_everything_but_the_canonical_encoding() {
        let good = login_id().encode();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            b
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("version 2", with(&|b| b[0] = 2)),
            // rxd's identifiers before go-macaroon-bakery's layout: 0x03 | nonce | key id.
            (
                "old rxd layout",
                [&[3u8][..], &[0x5a; 16], &[0x11; 16]].concat(),
            ),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("wire type 0", with(&|b| b[1] = 0x08)),
            ("unknown field 4", with(&|b| b.extend([0x22, 1, 0]))),
            ("field 0", with(&|b| b.extend([0x02, 0]))),
            ("storage id twice", with(&|b| b.extend([0x12, 1, 0]))),
            (
                "out of order",
                [&[3u8, 0x12, 1, 9, 0x0a, 1, 9][..]].concat(),
            ),
            ("empty nonce written", vec![3, 0x0a, 0]),
            ("non-minimal length", vec![3, 0x0a, 0x81, 0x00, 9]),
            (
                "length past the end",
                vec![3, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            ),
            (
                "varint overflow",
                [&[3u8, 0x0a][..], &[0xff; 10], &[1]].concat(),
            ),
            ("op: bad UTF-8", vec![3, 0x1a, 3, 0x0a, 1, 0xff]),
            (
                "op: entity twice",
                vec![3, 0x1a, 6, 0x0a, 1, b'a', 0x0a, 1, b'b'],
            ),
            ("op: unknown field", vec![3, 0x1a, 3, 0x1a, 1, b'a']),
            ("op: truncated", vec![3, 0x1a, 3, 0x0a, 5, b'a']),
        ];
        for (name, bytes) in cases {
            assert!(MacaroonId::decode(&bytes).is_err(), "{name}: {bytes:02x?}");
        }
        let many_ops = [&[3u8][..], &[0x1a, 0].repeat(MAX_OPS + 1)].concat();
        assert!(MacaroonId::decode(&many_ops).is_err());
    }
}
