//! rxd's nftables tables applied and the host's other tables inspected, through Debian's `nft`
//! binary (argv fixed, no shell, empty environment), inside a given network namespace. The
//! rulesets themselves are rxd-core's (`rxd_core::network::nft`): each one replaces `inet rxd`
//! and `bridge rxd` whole in one transaction, so this module only hands the JSON over. It never
//! writes to a table that is not rxd's: other tables (Docker's, ufw's, firewalld's) are read and
//! reported, never changed.

use crate::error::NetworkError;
use crate::netns::in_netns;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::process::{Command, ExitStatus, Stdio};
use thiserror::Error;

/// The `nft` rxd runs (Debian's `nftables` package); never looked up on a `PATH`.
pub const NFT: &str = "/usr/sbin/nft";
/// At most this much of `nft`'s stderr is kept for an error message.
pub const MAX_STDERR: usize = 4096;
/// At most this much of `nft -j list ruleset` is read: hosts with large Kubernetes rulesets stay
/// well below it, and a ruleset beyond it is refused rather than held in memory.
pub const MAX_RULESET: usize = 32 << 20;

#[derive(Debug, Error)]
pub enum FirewallError {
    /// `nft` could not be started (not installed, not executable) or its pipes failed.
    #[error("run {NFT} ({what}): {source}; rxd needs Debian's `nftables` package")]
    Spawn {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// `nft` ran and refused; `stderr` is its message, cut at [`MAX_STDERR`] bytes.
    #[error("{NFT} ({what}) failed ({status}): {stderr}")]
    Refused {
        what: &'static str,
        status: ExitStatus,
        stderr: String,
    },
    /// `nft` answered something this module cannot read.
    #[error("{NFT} ({what}): unreadable output: {detail}")]
    Output { what: &'static str, detail: String },
    /// Entering the network namespace failed.
    #[error(transparent)]
    Netns(#[from] NetworkError),
}

/// Replaces rxd's tables with `ruleset` (the JSON `rxd_core::network::nft::ruleset` builds) in
/// one `nft -j -f -` transaction, inside `netns` (the calling thread's namespace if `None`). If
/// `nft` refuses any part, nothing changes: the previous tables stay as they were.
pub fn apply(ruleset: &Value, netns: Option<BorrowedFd<'_>>) -> Result<(), FirewallError> {
    let input = serde_json::to_vec(ruleset).map_err(|e| FirewallError::Output {
        what: "apply",
        detail: e.to_string(),
    })?;
    in_namespace(netns, || {
        nft("apply", &["-j", "-f", "-"], &input, 0).map(drop)
    })
}

/// Deletes rxd's two tables (`rxd_core::network::nft::teardown`) and nothing else; tables that
/// are not there are not an error.
pub fn remove(netns: Option<BorrowedFd<'_>>) -> Result<(), FirewallError> {
    let teardown = rxd_core::network::nft::teardown();
    apply(&teardown, netns)
}

/// Reads the whole ruleset of `netns` (`nft -j list ruleset`, at most [`MAX_RULESET`] bytes) and
/// reports what would drop the traffic of rxd's bridges whatever rxd's own tables accept (spec
/// §8): a base chain of another table on the `forward` or `input` hook whose policy is `drop`.
/// Nothing is changed; objects and fields it does not know are skipped.
pub fn inspect(netns: Option<BorrowedFd<'_>>) -> Result<Vec<FirewallWarning>, FirewallError> {
    let out = in_namespace(netns, || {
        nft("inspect", &["-j", "list", "ruleset"], &[], MAX_RULESET)
    })?;
    Ok(warnings(&parse_list(&out)?))
}

fn in_namespace<T: Send>(
    netns: Option<BorrowedFd<'_>>,
    f: impl FnOnce() -> Result<T, FirewallError> + Send,
) -> Result<T, FirewallError> {
    match netns {
        // The child is forked from the thread inside the namespace and stays in it.
        Some(ns) => in_netns(ns, f)?,
        None => f(),
    }
}

/// Runs `nft ARGS` with `input` on stdin and returns its stdout (at most `max_out` bytes; more
/// is an error). Both pipes are read while stdin is written, so a chatty `nft` cannot block.
fn nft(
    what: &'static str,
    args: &[&str],
    input: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, FirewallError> {
    let spawn_err = |source| FirewallError::Spawn { what, source };
    let mut child = Command::new(NFT)
        .args(args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (written, out, err) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || match stdin {
            // A refusal that stops nft reading closes the pipe: its stderr says why.
            Some(mut pipe) => match pipe.write_all(input) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                other => other,
            },
            None => Ok(()),
        });
        let errors = scope.spawn(move || bounded(stderr, MAX_STDERR));
        let out = bounded(stdout, max_out);
        (
            writer.join().unwrap_or(Ok(())),
            out,
            errors.join().unwrap_or_else(|_| Ok((Vec::new(), false))),
        )
    });
    let status = child.wait().map_err(spawn_err)?;
    let (out, out_cut) = out.map_err(spawn_err)?;
    let (err, _) = err.map_err(spawn_err)?;
    if !status.success() {
        return Err(FirewallError::Refused {
            what,
            status,
            stderr: String::from_utf8_lossy(&err).trim().to_owned(),
        });
    }
    written.map_err(spawn_err)?;
    if out_cut {
        return Err(FirewallError::Output {
            what,
            detail: format!("more than {max_out} bytes"),
        });
    }
    Ok(out)
}

/// Reads a pipe to its end, keeping at most `max` bytes (the rest is drained so the writer never
/// blocks); the flag says whether anything was cut.
fn bounded<R: Read>(pipe: Option<R>, max: usize) -> io::Result<(Vec<u8>, bool)> {
    let Some(mut pipe) = pipe else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return Ok((kept, cut)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = max - kept.len();
        kept.extend_from_slice(&buf[..n.min(room)]);
        cut |= n > room;
    }
}

/// `nft -j list ruleset`: `{"nftables": [{"metainfo": …}, {"table": …}, {"chain": …}, …]}`.
#[derive(Deserialize)]
struct Listing {
    nftables: Vec<Value>,
}

/// One element of the listing; only chains are read, every other object is skipped.
#[derive(Deserialize)]
struct Object {
    chain: Option<ListedChain>,
}

/// A chain as nft lists it. Base chains have a hook; regular chains have only names.
#[derive(Deserialize)]
struct ListedChain {
    family: String,
    table: String,
    name: String,
    hook: Option<String>,
    policy: Option<String>,
}

fn parse_list(out: &[u8]) -> Result<Vec<ListedChain>, FirewallError> {
    // An empty ruleset may be listed as nothing at all.
    if out.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let listing: Listing = serde_json::from_slice(out).map_err(|e| FirewallError::Output {
        what: "inspect",
        detail: e.to_string(),
    })?;
    Ok(listing
        .nftables
        .into_iter()
        .filter_map(|item| serde_json::from_value::<Object>(item).ok()?.chain)
        .collect())
}

/// Which hook a dropping base chain sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Routed traffic: the bridge's instances reaching anything beyond the bridge (and, with
    /// br_netfilter, each other).
    Forward,
    /// Traffic to the host: the instances' DHCP and DNS requests to rxd's dnsmasq.
    Input,
}

/// Who most likely made the dropping chain, which decides the remedy offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Docker, through iptables-nft: table `ip filter` with a `DOCKER-USER` or `DOCKER` chain.
    Docker,
    /// ufw, through iptables-nft: a table with `ufw-…` chains.
    Ufw,
    /// firewalld's nftables backend: table `inet firewalld`.
    Firewalld,
    /// Anything else: an nftables table of the administrator's.
    Other,
}

/// Something outside rxd's tables that will drop the traffic of rxd's bridges. rxd accepts in its
/// own chains, but every base chain on a hook runs and any drop is final, so only the owner of
/// the dropping chain can let the traffic through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirewallWarning {
    /// A base chain of another table on `forward` or `input` with `policy drop`.
    DropPolicy {
        family: String,
        table: String,
        chain: String,
        hook: Hook,
        owner: Owner,
    },
}

impl FirewallWarning {
    /// What the administrator can run to let `bridge`'s traffic through (LXD's advice).
    pub fn remedy(&self, bridge: &str) -> Vec<String> {
        let FirewallWarning::DropPolicy {
            family,
            table,
            chain,
            hook,
            owner,
        } = self;
        match (owner, hook) {
            (Owner::Docker, Hook::Forward) => vec![
                format!("iptables -I DOCKER-USER -i {bridge} -j ACCEPT"),
                format!(
                    "iptables -I DOCKER-USER -o {bridge} -m conntrack --ctstate \
                     RELATED,ESTABLISHED -j ACCEPT"
                ),
            ],
            (Owner::Ufw, Hook::Forward) => vec![
                format!("ufw route allow in on {bridge}"),
                format!("ufw route allow out on {bridge}"),
            ],
            (Owner::Ufw, Hook::Input) => vec![format!("ufw allow in on {bridge}")],
            (Owner::Firewalld, _) => vec![format!(
                "firewall-cmd --zone=trusted --change-interface={bridge} --permanent && \
                 firewall-cmd --reload"
            )],
            (_, Hook::Forward) => vec![
                format!("nft insert rule {family} {table} {chain} iifname {bridge} accept"),
                format!(
                    "nft insert rule {family} {table} {chain} oifname {bridge} ct state \
                     related,established accept"
                ),
            ],
            (_, Hook::Input) => vec![
                format!(
                    "nft insert rule {family} {table} {chain} iifname {bridge} udp dport \
                     {{ 53, 67, 547 }} accept"
                ),
                format!(
                    "nft insert rule {family} {table} {chain} iifname {bridge} tcp dport 53 accept"
                ),
            ],
        }
    }

    /// The whole warning for `bridge`, as `/1.0/warnings` shows it.
    pub fn message(&self, bridge: &str) -> String {
        format!(
            "{self}; network {bridge}: run {}",
            self.remedy(bridge).join(" and ")
        )
    }
}

impl fmt::Display for FirewallWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let FirewallWarning::DropPolicy {
            family,
            table,
            chain,
            hook,
            owner,
        } = self;
        let (what, lost) = match hook {
            Hook::Forward => ("forward", "instances cannot reach other networks"),
            Hook::Input => (
                "input",
                "instances may get no DHCP lease and no DNS answers",
            ),
        };
        let by = match owner {
            Owner::Docker => " (Docker's)",
            Owner::Ufw => " (ufw's)",
            Owner::Firewalld => " (firewalld's)",
            Owner::Other => "",
        };
        write!(
            f,
            "chain {chain} of table {family} {table}{by} drops {what} traffic by default, and \
             rxd's rules cannot override it: {lost}"
        )
    }
}

fn warnings(chains: &[ListedChain]) -> Vec<FirewallWarning> {
    let in_table = |c: &ListedChain, pred: &dyn Fn(&str) -> bool| {
        chains
            .iter()
            .any(|o| o.family == c.family && o.table == c.table && pred(&o.name))
    };
    chains
        .iter()
        .filter(|c| {
            !(c.table == rxd_core::network::nft::TABLE
                && ["inet", "bridge"].contains(&c.family.as_str()))
        })
        .filter(|c| c.policy.as_deref() == Some("drop"))
        .filter_map(|c| {
            let hook = match c.hook.as_deref()? {
                "forward" => Hook::Forward,
                "input" => Hook::Input,
                _ => return None,
            };
            let owner = if in_table(c, &|n| n == "DOCKER-USER" || n == "DOCKER") {
                Owner::Docker
            } else if in_table(c, &|n| n.starts_with("ufw-") || n.starts_with("ufw6-")) {
                Owner::Ufw
            } else if c.family == "inet" && c.table == "firewalld" {
                Owner::Firewalld
            } else {
                Owner::Other
            };
            Some(FirewallWarning::DropPolicy {
                family: c.family.clone(),
                table: c.table.clone(),
                chain: c.name.clone(),
                hook,
                owner,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listing: &str, expected: &[(&str, &str, &str, Hook, Owner)]) {
        let got = warnings(&parse_list(listing.as_bytes()).unwrap());
        let want: Vec<_> = expected
            .iter()
            .map(
                |(family, table, chain, hook, owner)| FirewallWarning::DropPolicy {
                    family: family.to_string(),
                    table: table.to_string(),
                    chain: chain.to_string(),
                    hook: *hook,
                    owner: *owner,
                },
            )
            .collect();
        assert_eq!(got, want, "{listing}");
    }

    fn chain(family: &str, table: &str, name: &str, hook: &str, policy: &str) -> String {
        format!(
            r#"{{"chain": {{"family": "{family}", "table": "{table}", "name": "{name}", "handle": 1, "type": "filter", "hook": "{hook}", "prio": 0, "policy": "{policy}"}}}}"#
        )
    }

    fn regular(family: &str, table: &str, name: &str) -> String {
        format!(
            r#"{{"chain": {{"family": "{family}", "table": "{table}", "name": "{name}", "handle": 2}}}}"#
        )
    }

    fn listing(items: &[String]) -> String {
        let meta = r#"{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}"#;
        let mut all = vec![meta.to_owned()];
        all.extend_from_slice(items);
        format!(r#"{{"nftables": [{}]}}"#, all.join(", "))
    }

    #[test]
    fn drop_policies_on_forward_and_input_are_reported() {
        use Hook::*;
        use Owner::*;
        check("", &[]);
        check(&listing(&[]), &[]);
        // Docker's FORWARD DROP through iptables-nft.
        check(
            &listing(&[
                chain("ip", "filter", "FORWARD", "forward", "drop"),
                regular("ip", "filter", "DOCKER-USER"),
            ]),
            &[("ip", "filter", "FORWARD", Forward, Docker)],
        );
        // The same policy without Docker's chains.
        check(
            &listing(&[chain("ip", "filter", "FORWARD", "forward", "drop")]),
            &[("ip", "filter", "FORWARD", Forward, Other)],
        );
        // Docker's chains in another family's table do not make it Docker's.
        check(
            &listing(&[
                chain("ip6", "filter", "FORWARD", "forward", "drop"),
                regular("ip", "filter", "DOCKER"),
            ]),
            &[("ip6", "filter", "FORWARD", Forward, Other)],
        );
        check(
            &listing(&[
                chain("ip", "filter", "INPUT", "input", "drop"),
                regular("ip", "filter", "ufw-user-input"),
            ]),
            &[("ip", "filter", "INPUT", Input, Ufw)],
        );
        check(
            &listing(&[chain("inet", "firewalld", "filter_INPUT", "input", "drop")]),
            &[("inet", "firewalld", "filter_INPUT", Input, Firewalld)],
        );
        // Accepting policies, other hooks and regular chains are fine.
        check(
            &listing(&[
                chain("inet", "other", "fw", "forward", "accept"),
                chain("inet", "other", "out", "output", "drop"),
                chain("inet", "other", "pre", "prerouting", "drop"),
                regular("inet", "other", "forward"),
            ]),
            &[],
        );
        // rxd's own tables are not foreign; a table named rxd in another family is.
        check(
            &listing(&[
                chain("inet", "rxd", "fwd.br0", "forward", "drop"),
                chain("bridge", "rxd", "fwd.c1.eth0", "forward", "drop"),
                chain("ip", "rxd", "fwd", "forward", "drop"),
            ]),
            &[("ip", "rxd", "fwd", Forward, Other)],
        );
    }

    #[test]
    fn what_it_does_not_understand_is_skipped() {
        check(
            &listing(&[
                r#"{"table": {"family": "inet", "name": "x", "handle": 1}}"#.into(),
                r#"{"rule": {"family": "inet", "table": "x", "chain": "y", "expr": []}}"#.into(),
                r#"{"chain": {"family": "inet", "name": 3}}"#.into(),
                r#"{"flowtable": {}}"#.into(),
                r#"7"#.into(),
                chain("inet", "x", "f", "forward", "drop"),
            ]),
            &[("inet", "x", "f", Hook::Forward, Owner::Other)],
        );
        assert!(parse_list(b"[1, 2]").is_err());
        assert!(parse_list(b"{\"nftables\": ").is_err());
    }

    #[test]
    fn remedies_name_the_bridge() {
        let w = |owner, hook| FirewallWarning::DropPolicy {
            family: "ip".into(),
            table: "filter".into(),
            chain: "FORWARD".into(),
            hook,
            owner,
        };
        assert_eq!(
            w(Owner::Docker, Hook::Forward).remedy("rxdbr0"),
            [
                "iptables -I DOCKER-USER -i rxdbr0 -j ACCEPT",
                "iptables -I DOCKER-USER -o rxdbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            ]
        );
        assert_eq!(
            w(Owner::Other, Hook::Input).remedy("br0"),
            [
                "nft insert rule ip filter FORWARD iifname br0 udp dport { 53, 67, 547 } accept",
                "nft insert rule ip filter FORWARD iifname br0 tcp dport 53 accept",
            ]
        );
        let m = w(Owner::Docker, Hook::Forward).message("rxdbr0");
        assert!(
            m.starts_with("chain FORWARD of table ip filter (Docker's) drops forward traffic"),
            "{m}"
        );
        assert!(
            m.contains("iptables -I DOCKER-USER -i rxdbr0 -j ACCEPT"),
            "{m}"
        );
    }

    #[test]
    fn bounded_reads_keep_the_head_and_drain_the_rest() {
        let data = vec![7u8; 20_000];
        let (kept, cut) = bounded(Some(&data[..]), 100).unwrap();
        assert_eq!((kept.len(), cut), (100, true));
        let (kept, cut) = bounded(Some(&data[..]), 20_000).unwrap();
        assert_eq!((kept.len(), cut), (20_000, false));
        let (kept, cut) = bounded(Some(&data[..]), 0).unwrap();
        assert_eq!((kept.len(), cut), (0, true));
    }
}
