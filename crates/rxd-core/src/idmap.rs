//! Id maps for containers: which host uids and gids a container's ids map to.
//!
//! The host range comes from the `root` entries of /etc/subuid and /etc/subgid. Unprivileged
//! containers share its first 65536 ids; a container with `security.idmap.isolated=true` gets a
//! block of its own, first-fit after the shared block, disjoint from the shared block and from
//! every other isolated block (LXD's isolated blocks overlap its shared map). A pinned base
//! (`security.idmap.base`) is checked the same way. Privileged containers map 0 to 0.

use crate::instance_config::flag;
use crate::launch::IdMap;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use thiserror::Error;

/// Ids in the shared block, and the default size of an isolated block.
pub const BLOCK_SIZE: u32 = 65536;

/// A contiguous range of host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Block {
    pub base: u32,
    pub size: u32,
}

impl Block {
    /// One past the last id, as u64 so `base + size` cannot overflow.
    pub fn end(&self) -> u64 {
        u64::from(self.base) + u64::from(self.size)
    }

    pub fn overlaps(&self, other: &Block) -> bool {
        u64::from(self.base) < other.end() && u64::from(other.base) < self.end()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdmapError {
    #[error("Not enough uid/gid available for the container (host range {host_base}+{host_size}, {wanted} ids wanted)")]
    Exhausted {
        host_base: u32,
        host_size: u32,
        wanted: u32,
    },
    #[error("security.idmap.base {base} with size {size} is outside the host range {host_base}+{host_size}")]
    OutOfRange {
        base: u32,
        size: u32,
        host_base: u32,
        host_size: u32,
    },
    #[error("security.idmap.base {base} with size {size} overlaps ids already used by {with}")]
    Overlap { base: u32, size: u32, with: String },
    #[error("security.idmap.size must be between 1 and {max}")]
    BadSize { max: u32 },
    #[error("invalid security.idmap.size {0:?}")]
    InvalidSize(String),
    #[error("unreadable idmap {0:?}")]
    Unreadable(String),
    #[error("the host range for containers is smaller than {BLOCK_SIZE} ids or includes uid 0")]
    HostRangeUnusable,
    #[error("Project {project:?} may hold at most {limit} host ids in isolated id maps (limits.idmap.size); it holds {used}, and {wanted} more were asked for")]
    ProjectBudget {
        project: String,
        limit: u64,
        used: u64,
        wanted: u32,
    },
}

/// How many host ids a project's isolated blocks may hold together when `limits.idmap.size`
/// is not set and a non-administrator asks: sixteen default blocks. Without a bound, one
/// operator could take the whole host range (and so refuse everyone else an isolated map).
pub const DEFAULT_PROJECT_IDMAP_LIMIT: u64 = 16 * BLOCK_SIZE as u64;

/// The bound on a project's isolated ids for one request: the project's `limits.idmap.size`
/// binds everyone; unset, [`DEFAULT_PROJECT_IDMAP_LIMIT`] binds non-administrators only.
pub fn project_limit(configured: Option<&str>, admin: bool) -> Option<u64> {
    match configured.and_then(|v| v.parse::<u64>().ok()) {
        Some(limit) => Some(limit),
        None if admin => None,
        None => Some(DEFAULT_PROJECT_IDMAP_LIMIT),
    }
}

/// May `project`, whose isolated blocks already hold `used` ids, take `wanted` more?
pub fn check_project_budget(
    project: &str,
    used: u64,
    wanted: u32,
    limit: Option<u64>,
) -> Result<(), IdmapError> {
    match limit {
        Some(limit) if used + u64::from(wanted) > limit => Err(IdmapError::ProjectBudget {
            project: project.into(),
            limit,
            used,
            wanted,
        }),
        _ => Ok(()),
    }
}

/// The daemon's host range for one id kind (uids or gids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRange(pub Block);

impl HostRange {
    /// Check a range read from /etc/subuid or /etc/subgid: it must hold the shared block and must
    /// not include host id 0 (root).
    pub fn new(base: u32, size: u32) -> Result<HostRange, IdmapError> {
        if base == 0 || size < BLOCK_SIZE || u64::from(base) + u64::from(size) > u64::from(u32::MAX)
        {
            return Err(IdmapError::HostRangeUnusable);
        }
        Ok(HostRange(Block { base, size }))
    }

    /// The block every non-isolated unprivileged container maps.
    pub fn shared(&self) -> Block {
        Block {
            base: self.0.base,
            size: BLOCK_SIZE,
        }
    }

    /// Choose an isolated block of `size` ids, given the isolated blocks `taken` by other
    /// containers: at `pinned` if given (checked for overlaps), else the first gap that fits.
    pub fn allocate(
        &self,
        taken: &[Block],
        size: u32,
        pinned: Option<u32>,
    ) -> Result<Block, IdmapError> {
        if size == 0 || size > self.0.size - BLOCK_SIZE {
            return Err(IdmapError::BadSize {
                max: self.0.size - BLOCK_SIZE,
            });
        }
        let shared = self.shared();
        if let Some(base) = pinned {
            let block = Block { base, size };
            if u64::from(base) < u64::from(self.0.base) || block.end() > self.0.end() {
                return Err(IdmapError::OutOfRange {
                    base,
                    size,
                    host_base: self.0.base,
                    host_size: self.0.size,
                });
            }
            if block.overlaps(&shared) {
                return Err(IdmapError::Overlap {
                    base,
                    size,
                    with: "the shared block of unprivileged containers".into(),
                });
            }
            if let Some(other) = taken.iter().find(|t| t.overlaps(&block)) {
                return Err(IdmapError::Overlap {
                    base,
                    size,
                    with: format!("another container ({}+{})", other.base, other.size),
                });
            }
            return Ok(block);
        }
        let mut sorted: Vec<Block> = taken.to_vec();
        sorted.sort();
        let mut candidate = shared.end();
        for t in &sorted {
            if candidate + u64::from(size) <= u64::from(t.base) {
                break;
            }
            candidate = candidate.max(t.end());
        }
        if candidate + u64::from(size) > self.0.end() {
            return Err(IdmapError::Exhausted {
                host_base: self.0.base,
                host_size: self.0.size,
                wanted: size,
            });
        }
        // candidate < self.0.end() <= u32::MAX here.
        Ok(Block {
            base: candidate as u32,
            size,
        })
    }
}

/// The first `user:start:count` line of a subordinate-id file for `user` with at least
/// [`BLOCK_SIZE`] ids.
pub fn parse_subid(text: &str, user: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let (name, start, count) = (parts.next()?, parts.next()?, parts.next()?);
        if name != user || parts.next().is_some() {
            return None;
        }
        let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
        (count >= BLOCK_SIZE).then_some((start, count))
    })
}

/// What an instance's config asks of its idmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub privileged: bool,
    pub isolated: bool,
    pub size: u32,
    pub pinned: Option<u32>,
}

impl Want {
    pub fn of(config: &BTreeMap<String, String>) -> Result<Want, IdmapError> {
        Ok(Want {
            privileged: flag(config, "security.privileged"),
            isolated: flag(config, "security.idmap.isolated"),
            size: match config.get("security.idmap.size") {
                Some(s) => s
                    .parse::<u32>()
                    .map_err(|_| IdmapError::InvalidSize(s.clone()))?,
                None => BLOCK_SIZE,
            },
            pinned: config
                .get("security.idmap.base")
                .and_then(|b| b.parse::<u32>().ok()),
        })
    }
}

/// The map of an instance: none if privileged, its isolated block (uid `base`; its gids at the
/// same offset in the gid range), or the shared block.
pub fn map_for(
    uid: &HostRange,
    gid: &HostRange,
    privileged: bool,
    block: Option<(u32, u32)>,
) -> Option<IdMap> {
    match (privileged, block) {
        (true, _) => None,
        (false, Some((base, size))) => Some(IdMap {
            uid: base,
            gid: gid.0.base + (base - uid.0.base),
            size,
        }),
        (false, None) => Some(IdMap {
            uid: uid.shared().base,
            gid: gid.shared().base,
            size: BLOCK_SIZE,
        }),
    }
}

/// A map as LXD writes it into `volatile.idmap.next`, `volatile.idmap.current` and
/// `volatile.last_state.idmap`: `[]` for a privileged container.
pub fn encode_volatile(map: Option<IdMap>) -> String {
    match map {
        None => "[]".into(),
        Some(IdMap { uid, gid, size }) => json!([
            {"Isuid": true, "Isgid": false, "Hostid": uid, "Nsid": 0, "Maprange": size},
            {"Isuid": false, "Isgid": true, "Hostid": gid, "Nsid": 0, "Maprange": size},
        ])
        .to_string(),
    }
}

/// A `volatile.idmap.*` value back into the simple map rxd writes (`None`: privileged). A map
/// that would reach host id 0, or whose uid and gid ranges differ in size, is refused: an
/// unprivileged container never maps to host root.
pub fn decode_volatile(text: &str) -> Result<Option<IdMap>, IdmapError> {
    let bad = || IdmapError::Unreadable(text.to_owned());
    let entries: Vec<Value> = serde_json::from_str(text).map_err(|_| bad())?;
    if entries.is_empty() {
        return Ok(None);
    }
    let find = |key: &str| {
        entries
            .iter()
            .find(|e| e[key] == json!(true) && e["Nsid"] == json!(0))
            .and_then(|e| {
                let host = u32::try_from(e["Hostid"].as_u64()?).ok()?;
                let size = u32::try_from(e["Maprange"].as_u64()?).ok()?;
                Some((host, size))
            })
    };
    let ((uid, size), (gid, gsize)) = (
        find("Isuid").ok_or_else(bad)?,
        find("Isgid").ok_or_else(bad)?,
    );
    if uid == 0 || gid == 0 || size != gsize || size == 0 {
        return Err(bad());
    }
    Ok(Some(IdMap { uid, gid, size }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostRange {
        HostRange::new(1_000_000, 1_000_000_000).unwrap()
    }

    fn b(base: u32, size: u32) -> Block {
        Block { base, size }
    }

    fn check(taken: &[Block], size: u32, pinned: Option<u32>, expected: Result<Block, &str>) {
        match (host().allocate(taken, size, pinned), expected) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got, want, "taken {taken:?} size {size} pinned {pinned:?}")
            }
            (Err(e), Err(kind)) => {
                assert!(format!("{e:?}").starts_with(kind), "{e:?} is not {kind}")
            }
            (got, want) => {
                panic!("taken {taken:?} size {size} pinned {pinned:?}: got {got:?}, want {want:?}")
            }
        }
    }

    #[test]
    fn allocation_table() {
        let s = 1_000_000 + BLOCK_SIZE; // first id after the shared block
        check(&[], BLOCK_SIZE, None, Ok(b(s, BLOCK_SIZE)));
        check(
            &[b(s, BLOCK_SIZE)],
            BLOCK_SIZE,
            None,
            Ok(b(s + BLOCK_SIZE, BLOCK_SIZE)),
        );
        // A gap exactly the right size is used (<=, not <: LXD wastes one id).
        check(
            &[b(s + BLOCK_SIZE, 10)],
            BLOCK_SIZE,
            None,
            Ok(b(s, BLOCK_SIZE)),
        );
        check(
            &[b(s + BLOCK_SIZE - 1, 10)],
            BLOCK_SIZE,
            None,
            Ok(b(s + BLOCK_SIZE + 9, BLOCK_SIZE)),
        );
        // Unsorted input, gaps skipped when too small.
        check(
            &[b(s + 300, 100), b(s, 100)],
            150,
            None,
            Ok(b(s + 100, 150)),
        );
        check(
            &[b(s + 300, 100), b(s, 100)],
            250,
            None,
            Ok(b(s + 400, 250)),
        );
        check(&[], 1, None, Ok(b(s, 1)));
        // The last ids of the host range can be used, not one more.
        let last = 1_000_000 + 1_000_000_000 - 10;
        check(&[b(s, last - s)], 10, None, Ok(b(last, 10)));
        check(&[b(s, last - s + 1)], 10, None, Err("Exhausted"));
        // Sizes.
        check(&[], 0, None, Err("BadSize"));
        check(&[], 1_000_000_000, None, Err("BadSize"));
        // Pinned bases are checked.
        check(&[], 100, Some(s + 1000), Ok(b(s + 1000, 100)));
        check(&[], 100, Some(1_000_000), Err("Overlap"));
        check(&[], 100, Some(s - 1), Err("Overlap"));
        check(&[b(s + 1000, 100)], 100, Some(s + 1099), Err("Overlap"));
        check(
            &[b(s + 1000, 100)],
            100,
            Some(s + 1100),
            Ok(b(s + 1100, 100)),
        );
        check(&[b(s + 1000, 100)], 100, Some(s + 901), Err("Overlap"));
        check(&[b(s + 1000, 100)], 100, Some(s + 900), Ok(b(s + 900, 100)));
        check(&[], 100, Some(999_999), Err("OutOfRange"));
        check(&[], 100, Some(last + 5), Err("OutOfRange"));
    }

    #[test]
    fn blocks_never_overlap_the_shared_block_or_each_other() {
        let h = host();
        let mut taken = Vec::new();
        for size in [65536, 1, 1000, 65536, 7] {
            let block = h.allocate(&taken, size, None).unwrap();
            assert!(!block.overlaps(&h.shared()));
            assert!(taken.iter().all(|t: &Block| !t.overlaps(&block)));
            taken.push(block);
        }
    }

    #[test]
    fn host_ranges_and_subid_files() {
        assert_eq!(
            HostRange::new(0, 1 << 20),
            Err(IdmapError::HostRangeUnusable),
            "never host root"
        );
        assert_eq!(
            HostRange::new(100_000, 65535),
            Err(IdmapError::HostRangeUnusable)
        );
        assert_eq!(
            HostRange::new(u32::MAX - 10, 65536),
            Err(IdmapError::HostRangeUnusable)
        );
        let text = "ana:100000:65536\nroot:5:10\nroot:1000000:1000000000\nroot:2000000:65536\n";
        assert_eq!(parse_subid(text, "root"), Some((1_000_000, 1_000_000_000)));
        assert_eq!(parse_subid(text, "ana"), Some((100_000, 65536)));
        assert_eq!(parse_subid("root:x:y\nroot:1:2:3\n", "root"), None);
        assert_eq!(parse_subid("", "root"), None);
    }

    #[test]
    fn project_budgets_bound_non_admins_by_default_and_everyone_when_set() {
        let cases: &[(Option<&str>, bool, u64, u32, bool)] = &[
            // (limits.idmap.size, admin, used, wanted, allowed)
            (None, false, 0, 65536, true),
            (None, false, 15 * 65536, 65536, true),
            (None, false, 16 * 65536, 65536, false),
            (None, false, 0, 1 << 31, false),
            (None, true, 0, 1 << 31, true),
            (Some("131072"), true, 65536, 65536, true),
            (Some("131072"), true, 65536, 65537, false),
            (Some("0"), false, 0, 1, false),
            (Some("4294967296"), false, 0, u32::MAX, true),
        ];
        for &(configured, admin, used, wanted, allowed) in cases {
            let limit = project_limit(configured, admin);
            assert_eq!(
                check_project_budget("p", used, wanted, limit).is_ok(),
                allowed,
                "{configured:?} admin={admin} used={used} wanted={wanted}"
            );
        }
    }

    #[test]
    fn volatile_maps_round_trip() {
        for map in [
            None,
            Some(IdMap {
                uid: 1_000_000,
                gid: 1_000_000,
                size: 65536,
            }),
            Some(IdMap {
                uid: 1_065_536,
                gid: 2_065_536,
                size: 1,
            }),
            Some(IdMap {
                uid: u32::MAX - 1,
                gid: 1,
                size: 1,
            }),
        ] {
            assert_eq!(decode_volatile(&encode_volatile(map)), Ok(map), "{map:?}");
        }
    }

    /// Whatever is written into the config, no decoded map reaches host id 0.
    #[test]
    fn volatile_maps_never_reach_host_root() {
        let entry = |isuid: bool, host: i64, ns: i64, size: i64| {
            format!(
                r#"{{"Isuid":{isuid},"Isgid":{},"Hostid":{host},"Nsid":{ns},"Maprange":{size}}}"#,
                !isuid
            )
        };
        let two = |u: String, g: String| format!("[{u},{g}]");
        let cases = [
            two(entry(true, 0, 0, 65536), entry(false, 100000, 0, 65536)),
            two(entry(true, 100000, 0, 65536), entry(false, 0, 0, 65536)),
            two(entry(true, 100000, 0, 65536), entry(false, 100000, 0, 1000)),
            two(entry(true, 100000, 0, 0), entry(false, 100000, 0, 0)),
            two(entry(true, -1, 0, 65536), entry(false, 100000, 0, 65536)),
            two(
                entry(true, 4294967296, 0, 65536),
                entry(false, 100000, 0, 65536),
            ),
            two(
                entry(true, 100000, 1, 65536),
                entry(false, 100000, 0, 65536),
            ),
            format!("[{}]", entry(true, 100000, 0, 65536)),
            "{}".into(),
            "not json".into(),
        ];
        for text in cases {
            assert_eq!(
                decode_volatile(&text),
                Err(IdmapError::Unreadable(text.clone())),
                "{text}"
            );
        }
        assert_eq!(decode_volatile("[]"), Ok(None));
    }

    #[test]
    fn wants_and_maps() {
        let config = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            Want::of(&config(&[
                ("security.idmap.isolated", "true"),
                ("security.idmap.size", "1000"),
                ("security.idmap.base", "2000000")
            ])),
            Ok(Want {
                privileged: false,
                isolated: true,
                size: 1000,
                pinned: Some(2_000_000)
            })
        );
        assert_eq!(
            Want::of(&config(&[("security.idmap.size", "lots")])),
            Err(IdmapError::InvalidSize("lots".into()))
        );
        let uid = HostRange::new(1_000_000, 1_000_000_000).unwrap();
        let gid = HostRange::new(3_000_000, 1_000_000_000).unwrap();
        assert_eq!(map_for(&uid, &gid, true, Some((1_065_536, 65536))), None);
        assert_eq!(
            map_for(&uid, &gid, false, None),
            Some(IdMap {
                uid: 1_000_000,
                gid: 3_000_000,
                size: BLOCK_SIZE
            })
        );
        assert_eq!(
            map_for(&uid, &gid, false, Some((1_065_536, 1000))),
            Some(IdMap {
                uid: 1_065_536,
                gid: 3_065_536,
                size: 1000
            })
        );
    }
}
