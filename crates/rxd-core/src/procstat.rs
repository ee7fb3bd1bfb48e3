//! `/proc/<pid>/stat` as the helpers that track processes by pid and start time read it (the
//! caller reads the file; this only parses it).

/// The fields rxd uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `Z`...).
    pub state: char,
    /// The session id.
    pub session: i32,
    /// The start time (field 22, clock ticks since boot): with the pid, a process's identity.
    pub start: u64,
}

/// Parse one `/proc/<pid>/stat` text. The command name (field 2) is in parentheses and may hold
/// anything, `)` and spaces included, so the fields are counted from the last `)`.
pub fn parse(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        session: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_parentheses_and_spaces() {
        let text = "42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(
            parse(text),
            Some(ProcStat {
                state: 'S',
                session: 42,
                start: 12345
            })
        );
        assert_eq!(parse("42 (x) S 1"), None);
        assert_eq!(parse("no parenthesis"), None);
    }
}
