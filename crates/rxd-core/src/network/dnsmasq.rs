//! dnsmasq, one per managed bridge: its argv (LXD's order, with rxd's changes), the per-NIC
//! hosts files, and its lease file read as hostile input. Every argv element and hosts line is
//! built from typed values (addresses, networks, MACs, validated names); no config text reaches
//! them. It must not know how dnsmasq is started, supervised or signalled, nor where files live:
//! paths, the user and the group are handed in.

use crate::devices;
use crate::name::InstanceKey;
use crate::network::config::{
    AddrRange, BridgeConfig, DnsMode, DnsName, Family, NetworkName, DEFAULT_MTU,
};
use crate::network::mac::Mac;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// What the daemon decides about a dnsmasq it starts.
#[derive(Clone, Copy, Debug)]
pub struct Setup<'a> {
    /// The unprivileged account dnsmasq drops to (`dnsmasq`, else `nobody`) and its group.
    pub user: &'a str,
    pub group: &'a str,
    /// `<dir>/networks/<n>/dnsmasq.leases`.
    pub leases_file: &'a Path,
    /// `<dir>/networks/<n>/dnsmasq.hosts`: a directory, one file per NIC, re-read on SIGHUP.
    pub hosts_dir: &'a Path,
    /// `--quiet-dhcp --quiet-dhcp6 --quiet-ra`, as LXD passes them unless in debug mode.
    pub quiet: bool,
}

/// The arguments of `dnsmasq` (the program name not included) for bridge `name`, in LXD 5.0's
/// order. rxd's changes: `--conf-file=/dev/null` (LXD points it at a file holding
/// `raw.dnsmasq`, which rxd refuses), `--dhcp-rapid-commit` always (rxd needs dnsmasq > 2.79),
/// user and group always given.
pub fn argv(name: &NetworkName, config: &BridgeConfig, setup: &Setup<'_>) -> Vec<OsString> {
    let mut args = Argv(Vec::new());
    args.extend([
        "--keep-in-foreground",
        "--strict-order",
        "--bind-interfaces",
        "--except-interface=lo",
        "--pid-file=",
        "--no-ping",
    ]);
    args.push(format!("--interface={name}"));
    args.push("--dhcp-rapid-commit");
    if setup.quiet {
        args.extend(["--quiet-dhcp", "--quiet-dhcp6", "--quiet-ra"]);
    }
    // The lease and hosts files come with the first family that has DHCP, once.
    let mut files_added = false;
    let mut dhcp_files = |args: &mut Argv| {
        if !std::mem::replace(&mut files_added, true) {
            args.extend(["--dhcp-no-override", "--dhcp-authoritative"]);
            args.push(path_arg("--dhcp-leasefile=", setup.leases_file));
            args.push(path_arg("--dhcp-hostsfile=", setup.hosts_dir));
        }
    };
    if let Some(v4) = &config.ipv4 {
        args.push(format!("--listen-address={}", v4.address.addr()));
        if v4.dhcp {
            dhcp_files(&mut args);
            if let Some(gw) = config.ipv4_dhcp_gateway {
                args.push(format!("--dhcp-option-force=3,{gw}"));
            }
            if config.mtu != DEFAULT_MTU {
                args.push(format!("--dhcp-option-force=26,{}", config.mtu));
            }
            if !config.dns_search.is_empty() {
                args.push(format!(
                    "--dhcp-option-force=119,{}",
                    join(&config.dns_search)
                ));
            }
            for r in v4.dhcp_ranges_or_default() {
                args.push("--dhcp-range");
                args.push(format!("{},{},{}", r.first, r.last, v4.dhcp_expiry));
            }
        }
    }
    if let Some(v6) = &config.ipv6 {
        args.push(format!("--listen-address={}", v6.address.addr()));
        args.push("--enable-ra");
        if !v6.dhcp {
            args.push("--dhcp-range");
            args.push(format!("::,constructor:{name},ra-only"));
        } else {
            dhcp_files(&mut args);
            if config.ipv6_dhcp_stateful {
                let prefix = v6.address.prefix_len();
                for r in v6.dhcp_ranges_or_default() {
                    args.push("--dhcp-range");
                    args.push(format!(
                        "{},{},{prefix},{}",
                        r.first, r.last, v6.dhcp_expiry
                    ));
                }
            } else {
                args.push("--dhcp-range");
                args.push(format!("::,constructor:{name},ra-stateless,ra-names"));
            }
        }
    }
    if config.dns_mode != DnsMode::None {
        let domain = &config.dns_domain;
        args.push("-s");
        args.push(domain.as_str());
        args.push("--interface-name");
        args.push(format!("_gateway.{domain},{name}"));
        args.push("-S");
        args.push(format!("/{domain}/"));
        // Names of instances outside `default` (`<name>.<project>.<domain>`), which a DHCP
        // host line cannot carry: dnsmasq drops a dotted name's domain and would register
        // `<name>`, another project's instance's name.
        args.push(path_arg("--addn-hosts=", &names_file(setup.hosts_dir)));
    }
    args.push("--conf-file=/dev/null");
    args.extend(["-u", setup.user, "-g", setup.group]);
    args.0
}

/// An argv under construction.
struct Argv(Vec<OsString>);

impl Argv {
    fn push(&mut self, arg: impl Into<OsString>) {
        self.0.push(arg.into());
    }

    fn extend<'a>(&mut self, args: impl IntoIterator<Item = &'a str>) {
        self.0.extend(args.into_iter().map(OsString::from));
    }
}

fn path_arg(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path.as_os_str());
    arg
}

fn join(items: &[impl Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The file of names of instances outside `default`, next to the hosts directory.
pub fn names_file(hosts_dir: &Path) -> std::path::PathBuf {
    hosts_dir.with_file_name("dnsmasq.names")
}

/// The names file's content: `<address> <name>.<project>.<domain>` for each address of each
/// NIC of an instance outside `default` (dnsmasq's hosts-file syntax, re-read on SIGHUP).
pub fn names(
    nics: &[(InstanceKey, Option<Ipv4Addr>, Option<Ipv6Addr>)],
    domain: &crate::network::config::DnsName,
) -> String {
    let mut out = String::new();
    for (key, v4, v6) in nics {
        let (project, name) = key.split();
        if project == "default" {
            continue;
        }
        let v4 = v4.map(IpAddr::V4);
        let v6 = v6.map(IpAddr::V6);
        for a in [v4, v6].into_iter().flatten() {
            out.push_str(&format!(
                "{a} {name}.{project}.{domain}\n",
                domain = domain.as_str()
            ));
        }
    }
    out
}

/// The name DNS gives an instance: its name in `default`, `<instance>.<project>` elsewhere
/// (LXD's `project.DNS`).
pub fn dns_name(instance: &InstanceKey) -> String {
    match instance.split() {
        ("default", name) => name.to_owned(),
        (project, name) => format!("{name}.{project}"),
    }
}

/// A NIC's hosts file name in the hosts directory: `<instance key>.<encoded device>`. `None`
/// for a name that is not a device name.
pub fn hosts_file_name(instance: &InstanceKey, device: &str) -> Option<String> {
    devices::valid_name(device).then(|| format!("{instance}.{}", devices::encoded_name(device)))
}

/// A NIC's hosts file (LXD's `UpdateStaticEntry`): `<mac>[,<ipv4>][,[<ipv6>]][,<name>]` and a
/// newline, the name only when `dns.mode` is `managed`. `None` when the line would be the bare
/// MAC (LXD writes no file then).
pub fn hosts_file(
    mac: Mac,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    instance: &InstanceKey,
    mode: DnsMode,
) -> Option<String> {
    let mut line = mac.to_string();
    let bare = line.len();
    if let Some(a) = ipv4 {
        line.push_str(&format!(",{a}"));
    }
    if let Some(a) = ipv6 {
        line.push_str(&format!(",[{a}]"));
    }
    // Only `default`'s instances are named here; the others are in the names file.
    if mode == DnsMode::Managed && instance.split().0 == "default" {
        line.push(',');
        line.push_str(&dns_name(instance));
    }
    (line.len() != bare).then(|| line + "\n")
}

/// Whether `addr` lies in one of `ranges` (for the caller that allocates NIC addresses).
pub fn range_contains<A: Family>(ranges: &[AddrRange<A>], addr: &A) -> bool {
    ranges.iter().any(|r| r.first <= *addr && *addr <= r.last)
}

/// Bounds on a lease file: more lines or longer ones are not read.
pub const MAX_LEASE_LINES: usize = 65_536;
pub const MAX_LEASE_LINE: usize = 1024;
/// A client id or DUID is at most 130 bytes (RFC 8415: 2 of type, at most 128 of body).
const MAX_ID_BYTES: usize = 130;

/// Who holds a lease: an IPv4 client's MAC, an IPv6 client's IAID (`T` prefix: a temporary
/// address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseHolder {
    Mac(Mac),
    Iaid { iaid: u32, temporary: bool },
}

/// One line of dnsmasq's lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Seconds since the epoch (0: never).
    pub expiry: u64,
    pub holder: LeaseHolder,
    pub address: IpAddr,
    /// The client's host name when it is a DNS name; a client chooses it, so anything else is
    /// dropped.
    pub hostname: Option<String>,
    /// The DHCPv4 client id or the DHCPv6 DUID.
    pub client_id: Option<Vec<u8>>,
}

impl Lease {
    /// The MAC of the NIC holding the lease: the IPv4 line's, or for IPv6 the link-layer address
    /// in a DUID-LLT or DUID-LL of an Ethernet client. `None` for other DUIDs.
    pub fn mac(&self) -> Option<Mac> {
        match self.holder {
            LeaseHolder::Mac(m) => Some(m),
            LeaseHolder::Iaid { .. } => duid_mac(self.client_id.as_deref()?),
        }
    }
}

/// The Ethernet address in a DUID-LLT (type 1: type, hardware type 1, 4 bytes of time, MAC) or
/// DUID-LL (type 3: type, hardware type 1, MAC).
pub fn duid_mac(duid: &[u8]) -> Option<Mac> {
    let mac = match duid {
        [0, 1, 0, 1, _, _, _, _, rest @ ..] | [0, 3, 0, 1, rest @ ..] => rest,
        _ => return None,
    };
    Some(Mac(mac.try_into().ok()?))
}

/// `aa:bb:…` hex bytes, as dnsmasq writes client ids and DUIDs.
fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let bytes = s
        .split(':')
        .map(|b| {
            (b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
        })
        .collect::<Option<Vec<u8>>>()?;
    (bytes.len() <= MAX_ID_BYTES).then_some(bytes)
}

fn parse_line(line: &str) -> Option<Lease> {
    let fields: Vec<&str> = line.split(' ').collect();
    let [expiry, holder, address, hostname, client_id] = fields[..] else {
        return None;
    };
    let expiry = expiry
        .parse()
        .ok()
        .filter(|_| expiry.bytes().all(|b| b.is_ascii_digit()))?;
    let address: IpAddr = address.parse().ok()?;
    let holder = match address {
        IpAddr::V4(_) => LeaseHolder::Mac(holder.parse().ok()?),
        IpAddr::V6(_) => {
            let (digits, temporary) = match holder.strip_prefix('T') {
                Some(d) => (d, true),
                None => (holder, false),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            LeaseHolder::Iaid {
                iaid: digits.parse().ok()?,
                temporary,
            }
        }
    };
    let hostname = (hostname != "*")
        .then(|| DnsName::parse(hostname))
        .flatten()
        .map(|n| n.as_str().to_owned());
    let client_id = match client_id {
        "*" => None,
        id => Some(hex_bytes(id)?),
    };
    Some(Lease {
        expiry,
        holder,
        address,
        hostname,
        client_id,
    })
}

/// The lines of a lease file worth reading: at most [`MAX_LEASE_LINES`], each at most
/// [`MAX_LEASE_LINE`] bytes and UTF-8.
fn lines(text: &[u8]) -> impl Iterator<Item = &str> {
    text.split(|b| *b == b'\n')
        .take(MAX_LEASE_LINES)
        .filter(|l| l.len() <= MAX_LEASE_LINE)
        .filter_map(|l| std::str::from_utf8(l).ok())
}

/// The leases in a lease file. Malformed lines (and the `duid` line) are skipped: the file is
/// written by a process that parses packets from guests.
pub fn parse_leases(text: &[u8]) -> Vec<Lease> {
    lines(text).filter_map(parse_line).collect()
}

/// The lease file without the leases of NICs that are gone (`live`: the MACs of every NIC on
/// the bridge), written back before dnsmasq starts so stale leases neither block reservations
/// nor keep names. Kept: the server's `duid` line, leases of live MACs, IPv6 leases whose DUID
/// names no MAC (rxd cannot tell whose they are). Malformed lines are dropped.
pub fn retain_leases(text: &[u8], live: &BTreeSet<Mac>) -> String {
    let mut out = String::new();
    for line in lines(text) {
        let keep = match line.strip_prefix("duid ") {
            Some(duid) => hex_bytes(duid).is_some(),
            None => parse_line(line).is_some_and(|l| l.mac().is_none_or(|m| live.contains(&m))),
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The size a BOOTP message is padded to (RFC 1542 §2.1: relays may drop shorter ones).
const BOOTP_MIN: usize = 300;

/// A DHCPRELEASE (RFC 2131 §4.4.6) of the lease `mac` holds on `address`, for the dnsmasq
/// whose server identifier is `server` (its bridge's address); `xid` is the transaction id.
/// This is what LXD sends when a NIC goes: the address and the name are free at once, without
/// restarting dnsmasq. No client id is sent, so dnsmasq finds the lease by hardware address,
/// and it drops it only when its address is `address` and the identifier is its own.
pub fn dhcp_release(mac: Mac, address: Ipv4Addr, server: Ipv4Addr, xid: u32) -> Vec<u8> {
    let mut packet = Vec::with_capacity(BOOTP_MIN);
    // op BOOTREQUEST, htype Ethernet, hlen 6, hops 0.
    packet.extend_from_slice(&[1, 1, 6, 0]);
    packet.extend_from_slice(&xid.to_be_bytes());
    // secs, flags.
    packet.extend_from_slice(&[0; 4]);
    // ciaddr: the address released; yiaddr, siaddr, giaddr: none.
    packet.extend_from_slice(&address.octets());
    packet.extend_from_slice(&[0; 12]);
    // chaddr: the MAC, padded to 16 bytes; sname (64) and file (128) empty.
    packet.extend_from_slice(&mac.0);
    packet.extend_from_slice(&[0; 10 + 64 + 128]);
    // The magic cookie, then message type 7 (DHCPRELEASE), the server identifier, end.
    packet.extend_from_slice(&[99, 130, 83, 99, 53, 1, 7, 54, 4]);
    packet.extend_from_slice(&server.octets());
    packet.push(255);
    packet.resize(BOOTP_MIN, 0);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::config::Config;

    #[test]
    fn dhcp_release_is_rfc_2131s_layout() {
        let mac = Mac([0x00, 0x16, 0x3e, 0xac, 0xe3, 0x91]);
        let p = dhcp_release(
            mac,
            Ipv4Addr::new(10, 97, 0, 2),
            Ipv4Addr::new(10, 97, 0, 1),
            0x0102_0304,
        );
        assert_eq!(p.len(), 300);
        assert_eq!(&p[..8], &[1, 1, 6, 0, 1, 2, 3, 4]);
        assert_eq!(&p[8..12], &[0; 4]);
        assert_eq!(&p[12..16], &[10, 97, 0, 2], "ciaddr");
        assert_eq!(&p[16..28], &[0; 12], "yiaddr, siaddr, giaddr");
        assert_eq!(&p[28..34], &mac.0, "chaddr");
        assert!(
            p[34..236].iter().all(|b| *b == 0),
            "chaddr padding, sname, file"
        );
        assert_eq!(&p[236..240], &[99, 130, 83, 99], "magic cookie");
        assert_eq!(&p[240..243], &[53, 1, 7], "DHCPRELEASE");
        assert_eq!(&p[243..249], &[54, 4, 10, 97, 0, 1], "server identifier");
        assert_eq!(p[249], 255);
        assert!(p[250..].iter().all(|b| *b == 0));
    }

    fn config(pairs: &[(&str, &str)]) -> BridgeConfig {
        let c: Config = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BridgeConfig::from_config(&c).unwrap()
    }

    fn check(pairs: &[(&str, &str)], want: &[&str]) {
        let setup = Setup {
            user: "dnsmasq",
            group: "nogroup",
            leases_file: Path::new("/var/lib/rxd/networks/br0/dnsmasq.leases"),
            hosts_dir: Path::new("/var/lib/rxd/networks/br0/dnsmasq.hosts"),
            quiet: true,
        };
        let name = NetworkName::parse("br0").unwrap();
        let got: Vec<String> = argv(&name, &config(pairs), &setup)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, want, "{pairs:?}");
    }

    const HEAD: [&str; 11] = [
        "--keep-in-foreground",
        "--strict-order",
        "--bind-interfaces",
        "--except-interface=lo",
        "--pid-file=",
        "--no-ping",
        "--interface=br0",
        "--dhcp-rapid-commit",
        "--quiet-dhcp",
        "--quiet-dhcp6",
        "--quiet-ra",
    ];
    const FILES: [&str; 4] = [
        "--dhcp-no-override",
        "--dhcp-authoritative",
        "--dhcp-leasefile=/var/lib/rxd/networks/br0/dnsmasq.leases",
        "--dhcp-hostsfile=/var/lib/rxd/networks/br0/dnsmasq.hosts",
    ];
    const DNS: [&str; 7] = [
        "-s",
        "lxd",
        "--interface-name",
        "_gateway.lxd,br0",
        "-S",
        "/lxd/",
        "--addn-hosts=/var/lib/rxd/networks/br0/dnsmasq.names",
    ];
    const TAIL: [&str; 5] = ["--conf-file=/dev/null", "-u", "dnsmasq", "-g", "nogroup"];

    fn cat(parts: &[&[&str]]) -> Vec<String> {
        parts.concat().iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_default_dual_stack() {
        // What `lxc network create br0` stores, filled in.
        let want = cat(&[
            &HEAD,
            &["--listen-address=10.1.2.1"],
            &FILES,
            &["--dhcp-range", "10.1.2.2,10.1.2.254,1h"],
            &["--listen-address=fd42:1:2:3::1", "--enable-ra"],
            &["--dhcp-range", "::,constructor:br0,ra-stateless,ra-names"],
            &DNS,
            &TAIL,
        ]);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        check(
            &[
                ("ipv4.address", "10.1.2.1/24"),
                ("ipv4.nat", "true"),
                ("ipv6.address", "fd42:1:2:3::1/64"),
                ("ipv6.nat", "true"),
            ],
            &want,
        );
    }

    #[test]
    fn argv_everything_set() {
        let want = cat(&[
            &HEAD,
            &["--listen-address=192.0.2.1"],
            &FILES,
            &[
                "--dhcp-option-force=3,192.0.2.254",
                "--dhcp-option-force=26,9000",
                "--dhcp-option-force=119,lab.example,lxd",
                "--dhcp-range",
                "192.0.2.10,192.0.2.20,30m",
                "--dhcp-range",
                "192.0.2.100,192.0.2.200,30m",
            ],
            &["--listen-address=2001:db8::1", "--enable-ra"],
            &[
                "--dhcp-range",
                "2001:db8::2,2001:db8::ffff:ffff:ffff:ffff,64,infinite",
            ],
            &[
                "-s",
                "lab.example",
                "--interface-name",
                "_gateway.lab.example,br0",
                "-S",
                "/lab.example/",
                "--addn-hosts=/var/lib/rxd/networks/br0/dnsmasq.names",
            ],
            &TAIL,
        ]);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        check(
            &[
                ("ipv4.address", "192.0.2.1/24"),
                ("ipv4.dhcp.gateway", "192.0.2.254"),
                ("ipv4.dhcp.expiry", "30m"),
                (
                    "ipv4.dhcp.ranges",
                    "192.0.2.10-192.0.2.20,192.0.2.100-192.0.2.200",
                ),
                ("ipv6.address", "2001:db8::1/64"),
                ("ipv6.dhcp.stateful", "true"),
                ("ipv6.dhcp.expiry", "infinite"),
                ("bridge.mtu", "9000"),
                ("dns.domain", "lab.example"),
                ("dns.search", "lab.example, lxd"),
            ],
            &want,
        );
    }

    #[test]
    fn argv_variants() {
        // No DHCP anywhere and no DNS: no lease or hosts files, RA only.
        let want = cat(&[
            &HEAD,
            &["--listen-address=10.0.0.1"],
            &["--listen-address=fd00::1", "--enable-ra"],
            &["--dhcp-range", "::,constructor:br0,ra-only"],
            &TAIL,
        ]);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        check(
            &[
                ("ipv4.address", "10.0.0.1/24"),
                ("ipv4.dhcp", "false"),
                ("ipv6.address", "fd00::1/64"),
                ("ipv6.dhcp", "false"),
                ("dns.mode", "none"),
            ],
            &want,
        );
        // DHCPv6 only: the files come with it, once.
        let want = cat(&[
            &HEAD,
            &["--listen-address=fd00::1", "--enable-ra"],
            &FILES,
            &["--dhcp-range", "fd00::10,fd00::20,64,1h"],
            &DNS,
            &TAIL,
        ]);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        check(
            &[
                ("ipv6.address", "fd00::1/64"),
                ("ipv6.dhcp.stateful", "true"),
                ("ipv6.dhcp.ranges", "fd00::10-fd00::20"),
            ],
            &want,
        );
        // Neither family: DNS only.
        let want = cat(&[&HEAD, &DNS, &TAIL]);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        check(&[("ipv4.address", "none")], &want);
    }

    fn key(project: &str, name: &str) -> InstanceKey {
        InstanceKey::new(project, name)
    }

    #[test]
    fn hosts_files() {
        let mac: Mac = "00:16:3e:aa:bb:cc".parse().unwrap();
        let v4 = Some("10.1.2.3".parse().unwrap());
        let v6 = Some("fd42::3".parse().unwrap());
        let m = DnsMode::Managed;
        let c1 = key("default", "c1");
        let p = key("p", "c1");
        let h = |v4, v6, k, mode| hosts_file(mac, v4, v6, k, mode);
        assert_eq!(
            h(v4, v6, &c1, m).as_deref(),
            Some("00:16:3e:aa:bb:cc,10.1.2.3,[fd42::3],c1\n")
        );
        assert_eq!(
            h(v4, None, &p, m).as_deref(),
            Some("00:16:3e:aa:bb:cc,10.1.2.3\n")
        );
        assert_eq!(
            h(None, v6, &c1, m).as_deref(),
            Some("00:16:3e:aa:bb:cc,[fd42::3],c1\n")
        );
        assert_eq!(
            h(None, None, &c1, m).as_deref(),
            Some("00:16:3e:aa:bb:cc,c1\n")
        );
        assert_eq!(
            h(v4, None, &c1, DnsMode::Dynamic).as_deref(),
            Some("00:16:3e:aa:bb:cc,10.1.2.3\n")
        );
        assert_eq!(h(None, None, &c1, DnsMode::Dynamic), None);
        assert_eq!(h(None, None, &c1, DnsMode::None), None);
        assert_eq!(hosts_file_name(&p, "eth0").as_deref(), Some("p_c1.eth0"));
        assert_eq!(
            hosts_file_name(&c1, "a/b-c").as_deref(),
            Some("c1.a--b-2dc")
        );
        assert_eq!(hosts_file_name(&c1, "../x"), None);
        assert_eq!(hosts_file_name(&c1, "a\nb"), None);
    }

    fn check_lease(line: &str, want: Option<(&str, &str, Option<&str>, Option<&str>)>) {
        let got = parse_leases(line.as_bytes()).into_iter().next().map(|l| {
            let holder = match l.holder {
                LeaseHolder::Mac(m) => m.to_string(),
                LeaseHolder::Iaid { iaid, temporary } => {
                    format!("{}{iaid}", if temporary { "T" } else { "" })
                }
            };
            (
                holder,
                l.address.to_string(),
                l.hostname.clone(),
                l.mac().map(|m| m.to_string()),
            )
        });
        let want = want.map(|(h, a, n, m)| {
            (
                h.to_owned(),
                a.to_owned(),
                n.map(str::to_owned),
                m.map(str::to_owned),
            )
        });
        assert_eq!(got, want, "{line:?}");
    }

    const MAC: &str = "00:16:3e:aa:bb:cc";

    #[test]
    fn leases() {
        check_lease(
            "1700000000 00:16:3e:aa:bb:cc 10.1.2.3 c1 01:00:16:3e:aa:bb:cc",
            Some((MAC, "10.1.2.3", Some("c1"), Some(MAC))),
        );
        check_lease(
            "0 00:16:3e:aa:bb:cc 10.1.2.3 * *",
            Some((MAC, "10.1.2.3", None, Some(MAC))),
        );
        // DUID-LLT and DUID-LL name the MAC; DUID-EN does not.
        check_lease(
            "1700000000 1234 fd42::3 c1 00:01:00:01:2a:2b:2c:2d:00:16:3e:aa:bb:cc",
            Some(("1234", "fd42::3", Some("c1"), Some(MAC))),
        );
        check_lease(
            "1700000000 T7 fd42::3 * 00:03:00:01:00:16:3e:aa:bb:cc",
            Some(("T7", "fd42::3", None, Some(MAC))),
        );
        check_lease(
            "1700000000 7 fd42::3 * 00:02:00:00:ab:11:01:02",
            Some(("7", "fd42::3", None, None)),
        );
        // A hostile host name is dropped, the lease kept.
        check_lease(
            "1 00:16:3e:aa:bb:cc 10.1.2.3 x\u{1b}[2J *",
            Some((MAC, "10.1.2.3", None, Some(MAC))),
        );
        // Malformed lines.
        check_lease("duid 00:01:00:01:2a:2b:2c:2d:00:16:3e:00:00:01", None);
        check_lease("", None);
        check_lease("1 00:16:3e:aa:bb:cc 10.1.2.3 c1", None);
        check_lease("1 00:16:3e:aa:bb:cc 10.1.2.3 c1 * extra", None);
        check_lease("1  00:16:3e:aa:bb:cc 10.1.2.3 c1 *", None);
        check_lease("-1 00:16:3e:aa:bb:cc 10.1.2.3 c1 *", None);
        check_lease("+1 00:16:3e:aa:bb:cc 10.1.2.3 c1 *", None);
        check_lease("1 06-00:16:3e:aa:bb:cc 10.1.2.3 c1 *", None);
        check_lease("1 00:16:3e:aa:bb:cc 10.1.2 c1 *", None);
        check_lease("1 1234 10.1.2.3 c1 *", None);
        check_lease("1 00:16:3e:aa:bb:cc fd42::3 c1 *", None);
        check_lease("1 x fd42::3 c1 *", None);
        check_lease("1 99999999999 fd42::3 c1 *", None);
        check_lease("1 00:16:3e:aa:bb:cc 10.1.2.3 c1 0g", None);
        check_lease(
            &format!("1 {MAC} 10.1.2.3 c1 {}", vec!["00"; 131].join(":")),
            None,
        );
        check_lease(&format!("1 {MAC} 10.1.2.3 {} *", "a".repeat(1100)), None);
    }

    #[test]
    fn lease_bounds() {
        let line = format!("1 {MAC} 10.1.2.3 c1 *\n");
        assert_eq!(
            parse_leases(line.repeat(MAX_LEASE_LINES + 10).as_bytes()).len(),
            MAX_LEASE_LINES
        );
        let mut text = b"1 00:16:3e:aa:bb:cc 10.1.2.3 c\xff *\n".to_vec();
        text.extend_from_slice(line.as_bytes());
        assert_eq!(parse_leases(&text).len(), 1);
    }

    #[test]
    fn pruning() {
        let text = "\
1 00:16:3e:00:00:01 10.1.2.1 c1 *
1 00:16:3e:00:00:02 10.1.2.2 gone *
garbage
duid 00:01:00:01:2a:2b:2c:2d:00:16:3e:00:00:ff
1 1 fd42::1 c1 00:03:00:01:00:16:3e:00:00:01
1 2 fd42::2 gone 00:03:00:01:00:16:3e:00:00:02
1 3 fd42::3 * 00:02:00:00:ab:11:01:02
";
        let live: BTreeSet<Mac> = ["00:16:3e:00:00:01".parse().unwrap()].into();
        assert_eq!(
            retain_leases(text.as_bytes(), &live),
            "\
1 00:16:3e:00:00:01 10.1.2.1 c1 *
duid 00:01:00:01:2a:2b:2c:2d:00:16:3e:00:00:ff
1 1 fd42::1 c1 00:03:00:01:00:16:3e:00:00:01
1 3 fd42::3 * 00:02:00:00:ab:11:01:02
"
        );
        assert_eq!(retain_leases(b"", &live), "");
    }

    #[test]
    fn ranges() {
        let r = [AddrRange {
            first: Ipv4Addr::new(10, 0, 0, 2),
            last: Ipv4Addr::new(10, 0, 0, 9),
        }];
        assert!(range_contains(&r, &Ipv4Addr::new(10, 0, 0, 2)));
        assert!(range_contains(&r, &Ipv4Addr::new(10, 0, 0, 9)));
        assert!(!range_contains(&r, &Ipv4Addr::new(10, 0, 0, 10)));
    }
}
