//! `rxc network ...`: LXD's networks (`/1.0/networks`) as `lxc network` 5.0 handles them: the
//! same requests (changes are a read and an ETag-guarded write back), the same tables and
//! texts, and NIC devices attached to and detached from instances and profiles.

use crate::cli::{Format, NetworkCmd};
use crate::connect::{open, split_target, Conn};
use crate::device::Owner;
use crate::list::{row_cmp, si};
use crate::objects::{fetch, pairs, target};
use crate::output::{print_rows, str_of, yes_no};
use crate::project::escape;
use anyhow::bail;
use rxd_api::instance::Devices;
use rxd_api::network::{
    Network, NetworkLease, NetworkPost, NetworkPut, NetworkState, NetworksPost,
};
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// What `lxc network edit` shows above a network's YAML.
const NETWORK_EDIT_HELP: &str = "### This is a YAML representation of the network.
### Any line starting with a '# will be ignored.
###
### A network consists of a set of configuration items.
###
### An example would look like:
### name: lxdbr0
### config:
###   ipv4.address: 10.62.42.1/24
###   ipv4.nat: true
###   ipv6.address: fd00:56ad:9f7a:9800::1/64
###   ipv6.nat: true
### managed: true
### type: bridge
###
### Note that only the configuration can be changed.";

/// `lxc network list`'s columns.
const LIST_HEADERS: [&str; 8] = [
    "NAME",
    "TYPE",
    "MANAGED",
    "IPV4",
    "IPV6",
    "DESCRIPTION",
    "USED BY",
    "STATE",
];

/// The server refuses config changes to host interfaces; `lxc` says so before asking.
const UNMANAGED: &str = "Only managed networks can be modified";

fn path(name: &str) -> String {
    format!("/1.0/networks/{}", escape(name))
}

/// The rows of `lxc network list`: loopback and unknown interfaces left out, addresses from
/// the config (only managed networks have them), users counted, in `lxc`'s row order.
fn list_rows(networks: &[Network]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = networks
        .iter()
        .filter(|n| !matches!(n.kind.as_str(), "loopback" | "unknown"))
        .map(|n| {
            let config = |key: &str| n.config.get(key).cloned().unwrap_or_default();
            vec![
                n.name.clone(),
                n.kind.clone(),
                yes_no(n.managed),
                config("ipv4.address"),
                config("ipv6.address"),
                n.description.clone(),
                n.used_by.len().to_string(),
                n.status.to_uppercase(),
            ]
        })
        .collect();
    rows.sort_by(|a, b| row_cmp(a, b));
    rows
}

/// The headers and rows of `lxc network list-leases` (LOCATION only on a cluster).
fn lease_table(leases: &[NetworkLease], clustered: bool) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut headers = vec!["HOSTNAME", "MAC ADDRESS", "IP ADDRESS", "TYPE"];
    if clustered {
        headers.push("LOCATION");
    }
    let mut rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            let mut row = vec![
                l.hostname.clone(),
                l.hwaddr.clone(),
                l.address.clone(),
                l.kind.to_uppercase(),
            ];
            if clustered {
                row.push(l.location.clone());
            }
            row
        })
        .collect();
    rows.sort_by(|a, b| row_cmp(a, b));
    (headers, rows)
}

/// `lxc network info`'s text for network `name` in state `s`.
fn info_text(name: &str, s: &NetworkState) -> String {
    let mut out = format!(
        "Name: {name}\nMAC address: {}\nMTU: {}\nState: {}\nType: {}\n",
        s.hwaddr, s.mtu, s.state, s.kind
    );
    if !s.addresses.is_empty() {
        out += "\nIP addresses:\n";
        for a in &s.addresses {
            out += &format!(
                "  {}\t{}/{} ({})\n",
                a.family, a.address, a.netmask, a.scope
            );
        }
    }
    let c = &s.counters;
    out += &format!(
        "\nNetwork usage:\n  Bytes received: {}\n  Bytes sent: {}\n  Packets received: {}\n  Packets sent: {}\n",
        si(c.bytes_received),
        si(c.bytes_sent),
        c.packets_received,
        c.packets_sent
    );
    // Bonds, VLANs and OVN are host interfaces rxd reports without typing them: read by name.
    let list = |v: &Value, key: &str| -> String {
        let names = v[key].as_array().into_iter().flatten();
        let names: Vec<&str> = names.filter_map(Value::as_str).collect();
        names.join(", ")
    };
    if let Some(b) = &s.bond {
        out += &format!(
            "\nBond:\n  Mode: {}\n  Transmit policy: {}\n  Up delay: {}\n  Down delay: {}\n  MII Frequency: {}\n  MII state: {}\n  Lower devices: {}\n",
            str_of(b, "mode"),
            str_of(b, "transmit_policy"),
            number(b, "up_delay"),
            number(b, "down_delay"),
            number(b, "mii_frequency"),
            str_of(b, "mii_state"),
            list(b, "lower_devices"),
        );
    }
    if let Some(b) = &s.bridge {
        out += &format!(
            "\nBridge:\n  ID: {}\n  STP: {}\n  Forward delay: {}\n  Default VLAN ID: {}\n  VLAN filtering: {}\n  Upper devices: {}\n",
            b.id,
            b.stp,
            b.forward_delay,
            b.vlan_default,
            b.vlan_filtering,
            b.upper_devices.join(", ")
        );
    }
    if let Some(v) = &s.vlan {
        out += &format!(
            "\nVLAN:\n  Lower device: {}\n  VLAN ID: {}\n",
            str_of(v, "lower_device"),
            number(v, "vid")
        );
    }
    if let Some(o) = &s.ovn {
        out += &format!("\nOVN:\n  Chassis: {}\n", str_of(o, "chassis"));
    }
    out
}

/// A number field, `0` when absent as Go prints a zero value.
fn number(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "0".into(),
        _ => str_of(v, key),
    }
}

/// The NIC `lxc network attach` gives an instance: through `network` when the network is
/// managed and the server knows that key (`instance_nic_network`), so the NIC follows the
/// network's settings; else a macvlan on the interface, or bridged on an unmanaged bridge.
fn instance_nic(
    network: &Network,
    name: &str,
    by_network: bool,
    interface: Option<&str>,
) -> BTreeMap<String, String> {
    let mut nic = if network.managed && by_network {
        BTreeMap::from([
            ("type".to_owned(), "nic".to_owned()),
            ("network".to_owned(), network.name.clone()),
        ])
    } else {
        parent_nic(network, name)
    };
    if let Some(i) = interface {
        nic.insert("name".into(), i.to_owned());
    }
    nic
}

/// The NIC on `parent`: bridged on a bridge, else macvlan. (`lxc network attach-profile` 5.0
/// always attaches a profile this way, managed network or not.)
fn parent_nic(network: &Network, name: &str) -> BTreeMap<String, String> {
    let nictype = if network.kind == "bridge" {
        "bridged"
    } else {
        "macvlan"
    };
    BTreeMap::from([
        ("type".to_owned(), "nic".to_owned()),
        ("nictype".to_owned(), nictype.to_owned()),
        ("parent".to_owned(), name.to_owned()),
    ])
}

/// Add `nic` as `device`, refusing to replace one.
fn add_nic(
    devices: &mut Devices,
    device: String,
    nic: BTreeMap<String, String>,
) -> anyhow::Result<()> {
    if devices.contains_key(&device) {
        bail!("Device already exists: {device}");
    }
    devices.insert(device, nic);
    Ok(())
}

/// Whether `d` is a NIC on `network` (by `network` or by `parent`).
fn uses(d: &BTreeMap<String, String>, network: &str) -> bool {
    let is = |key: &str| d.get(key).map(String::as_str) == Some(network);
    d.get("type").map(String::as_str) == Some("nic") && (is("parent") || is("network"))
}

/// Remove the NIC on `network`: `device` if given, else the only one using it.
fn remove_nic(devices: &mut Devices, network: &str, device: Option<&str>) -> anyhow::Result<()> {
    let name = match device {
        Some(d) => d.to_owned(),
        None => {
            let mut matching = devices.iter().filter(|(_, d)| uses(d, network));
            match (matching.next(), matching.next()) {
                (Some((name, _)), None) => name.clone(),
                (Some(_), Some(_)) => {
                    bail!("More than one device matches, specify the device name")
                }
                (None, _) => bail!("No device found for this network"),
            }
        }
    };
    match devices.get(&name) {
        None => bail!("The specified device doesn't exist"),
        Some(d) if !uses(d, network) => bail!("The specified device doesn't match the network"),
        Some(_) => {
            devices.remove(&name);
            Ok(())
        }
    }
}

/// `KEY=VALUE...`, or the older `KEY VALUE`.
fn set_args(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    match args {
        [k, v] if !k.contains('=') => Ok(BTreeMap::from([(k.clone(), v.clone())])),
        _ => pairs(args),
    }
}

/// What `lxc network edit` sends: both writable fields, what the YAML left out empty.
fn writable(new: NetworkPut) -> NetworkPut {
    NetworkPut {
        config: Some(new.config.unwrap_or_default()),
        description: Some(new.description.unwrap_or_default()),
    }
}

/// Read a managed network, let `change` edit its config, write it back under its ETag.
async fn modify(
    conf: &ConfigDir,
    spec: &str,
    change: impl FnOnce(&mut BTreeMap<String, String>),
) -> anyhow::Result<()> {
    let (conn, name) = target(conf, spec)?;
    let (mut net, etag) = fetch::<Network>(&conn, &path(&name)).await?;
    if !net.managed {
        bail!(UNMANAGED);
    }
    change(&mut net.config);
    crate::edit::put(
        &conn,
        &path(&name),
        &NetworkPut::from_network(&net),
        etag.as_deref(),
    )
    .await
}

/// The server's `/1.0`, read loosely: only an extension or a flag is looked at.
async fn server(conn: &Conn) -> anyhow::Result<Value> {
    conn.call(Method::GET, "/1.0", None).await
}

/// What `attach` and `attach-profile` are given.
struct Attach {
    network: String,
    /// The instance or the profile.
    target: String,
    device: Option<String>,
    interface: Option<String>,
}

async fn attach(conf: &ConfigDir, args: Attach, owner: Owner) -> anyhow::Result<()> {
    let (conn, name) = target(conf, &args.network)?;
    let (net, _) = fetch::<Network>(&conn, &path(&name)).await?;
    let nic = match owner {
        Owner::Instance => {
            let by_network = net.managed
                && server(&conn).await?["api_extensions"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|e| e == "instance_nic_network"));
            instance_nic(&net, &name, by_network, args.interface.as_deref())
        }
        Owner::Profile => {
            let mut nic = parent_nic(&net, &name);
            if let Some(i) = args.interface {
                nic.insert("name".into(), i);
            }
            nic
        }
    };
    let device = args.device.unwrap_or_else(|| name.clone());
    let mut held = crate::device::read_on(conn, owner, args.target).await?;
    add_nic(&mut held.devices, device, nic)?;
    crate::device::write(held).await
}

async fn detach(
    conf: &ConfigDir,
    network: &str,
    target_name: String,
    device: Option<&str>,
    owner: Owner,
) -> anyhow::Result<()> {
    let (conn, name) = target(conf, network)?;
    let mut held = crate::device::read_on(conn, owner, target_name).await?;
    remove_nic(&mut held.devices, &name, device)?;
    crate::device::write(held).await
}

pub async fn run(conf: &ConfigDir, cmd: NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Attach {
            network,
            instance,
            device,
            interface,
        } => {
            let args = Attach {
                network,
                target: instance,
                device,
                interface,
            };
            attach(conf, args, Owner::Instance).await
        }
        NetworkCmd::AttachProfile {
            network,
            profile,
            device,
            interface,
        } => {
            let args = Attach {
                network,
                target: profile,
                device,
                interface,
            };
            attach(conf, args, Owner::Profile).await
        }
        NetworkCmd::Detach {
            network,
            instance,
            device,
        } => detach(conf, &network, instance, device.as_deref(), Owner::Instance).await,
        NetworkCmd::DetachProfile {
            network,
            profile,
            device,
        } => detach(conf, &network, profile, device.as_deref(), Owner::Profile).await,
        NetworkCmd::Create {
            name,
            config,
            kind,
            description,
        } => {
            let config = pairs(&config)?;
            let (conn, name) = target(conf, &name)?;
            let body = NetworksPost {
                config,
                description,
                name: name.clone(),
                kind: kind.unwrap_or_default(),
            };
            conn.send_as::<Value>(Method::POST, "/1.0/networks", &body)
                .await?;
            outln!("Network {name} created")?;
            Ok(())
        }
        NetworkCmd::Delete { name } => {
            let (conn, name) = target(conf, &name)?;
            conn.call(Method::DELETE, &path(&name), None).await?;
            outln!("Network {name} deleted")?;
            Ok(())
        }
        NetworkCmd::Edit { name } => {
            let (conn, name) = target(conf, &name)?;
            let p = path(&name);
            // From a terminal the editor starts on the network as it is, and the write is
            // guarded by its ETag; YAML on standard input is sent as it is, as lxc does.
            let (current, etag) = if std::io::stdin().is_terminal() {
                let (net, etag) = fetch::<Network>(&conn, &p).await?;
                if !net.managed {
                    bail!(UNMANAGED);
                }
                (serde_norway::to_string(&net)?, etag)
            } else {
                (String::new(), None)
            };
            let (conn, p, etag) = (&conn, &p, etag.as_deref());
            crate::edit::edit(
                NETWORK_EDIT_HELP,
                &current,
                |new: NetworkPut, interactive| async move {
                    crate::edit::put(conn, p, &writable(new), etag.filter(|_| interactive)).await
                },
            )
            .await
        }
        NetworkCmd::Get { name, key } => {
            let (conn, name) = target(conf, &name)?;
            let (net, _) = fetch::<Network>(&conn, &path(&name)).await?;
            // As lxc: a key that is not set prints nothing at all.
            if let Some(v) = net.config.get(&key) {
                outln!("{v}")?;
            }
            Ok(())
        }
        NetworkCmd::Info { name } => {
            let (conn, name) = target(conf, &name)?;
            let state: NetworkState = conn.get_as(&format!("{}/state", path(&name))).await?;
            out!("{}", info_text(&name, &state))?;
            Ok(())
        }
        NetworkCmd::List { remote, format } => {
            let (remote, filter) = split_target(conf, remote.as_deref().unwrap_or(""));
            if !filter.is_empty() {
                bail!("Filtering isn't supported yet");
            }
            let conn = open(conf, &remote)?;
            let networks: Vec<Network> = conn.get_as("/1.0/networks?recursion=1").await?;
            print_rows(
                format.format,
                &LIST_HEADERS,
                &list_rows(&networks),
                &networks,
            )
        }
        NetworkCmd::ListLeases { name, format } => {
            let (conn, name) = target(conf, &name)?;
            let leases: Vec<NetworkLease> = conn.get_as(&format!("{}/leases", path(&name))).await?;
            // Only a cluster's leases say where they are; asking costs a request, so only
            // when the table shows it.
            let clustered = match format.format {
                Format::Table | Format::Compact | Format::Csv => {
                    server(&conn).await?["environment"]["server_clustered"] == true
                }
                Format::Json | Format::Yaml => false,
            };
            let (headers, rows) = lease_table(&leases, clustered);
            print_rows(format.format, &headers, &rows, &leases)
        }
        NetworkCmd::Rename { old, new } => {
            let (conn, old) = target(conf, &old)?;
            conn.send_as::<Value>(
                Method::POST,
                &path(&old),
                &NetworkPost { name: new.clone() },
            )
            .await?;
            outln!("Network {old} renamed to {new}")?;
            Ok(())
        }
        NetworkCmd::Set { name, args } => {
            let set = set_args(&args)?;
            modify(conf, &name, |config| config.extend(set)).await
        }
        NetworkCmd::Unset { name, key } => {
            // As lxc: the key is sent with an empty value, which the server stores as unset,
            // so a key it does not know is refused rather than silently ignored.
            modify(conf, &name, |config| {
                config.insert(key, String::new());
            })
            .await
        }
        NetworkCmd::Show { name } => {
            let (conn, name) = target(conf, &name)?;
            let (mut net, _) = fetch::<Network>(&conn, &path(&name)).await?;
            net.used_by.sort();
            out!("{}", serde_norway::to_string(&net)?)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn network(name: &str, kind: &str, managed: bool, config: &[(&str, &str)]) -> Network {
        Network {
            name: name.into(),
            kind: kind.into(),
            managed,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(args: &[&str]) -> NetworkCmd {
        let cli = Cli::try_parse_from([&["rxc", "network"], args].concat()).unwrap();
        match cli.command {
            crate::cli::Command::Network(cmd) => cmd,
            other => panic!("not a network command: {other:?}"),
        }
    }

    #[test]
    fn arguments_parse_as_lxc_takes_them() {
        let NetworkCmd::Create {
            name,
            config,
            kind,
            description,
        } = parse(&[
            "create",
            "r:br1",
            "ipv4.address=10.1.1.1/24",
            "ipv6.address=none",
            "-t",
            "bridge",
        ])
        else {
            panic!()
        };
        assert_eq!(name, "r:br1");
        assert_eq!(config, ["ipv4.address=10.1.1.1/24", "ipv6.address=none"]);
        assert_eq!(kind.as_deref(), Some("bridge"));
        assert_eq!(description, "");
        assert!(matches!(
            parse(&["create", "br1", "--type=macvlan", "--description", "d"]),
            NetworkCmd::Create { kind: Some(k), description: d, .. } if k == "macvlan" && d == "d"
        ));
        let NetworkCmd::Attach {
            network,
            instance,
            device,
            interface,
        } = parse(&["attach", "br1", "c1", "eth1", "ens3"])
        else {
            panic!()
        };
        assert_eq!((network.as_str(), instance.as_str()), ("br1", "c1"));
        assert_eq!(
            (device.as_deref(), interface.as_deref()),
            (Some("eth1"), Some("ens3"))
        );
        let NetworkCmd::DetachProfile {
            profile, device, ..
        } = parse(&["detach-profile", "br1", "default"])
        else {
            panic!()
        };
        assert_eq!((profile.as_str(), device), ("default", None));
        let NetworkCmd::Set { args, .. } = parse(&["set", "br1", "ipv4.nat", "false"]) else {
            panic!()
        };
        assert_eq!(set_args(&args).unwrap(), map(&[("ipv4.nat", "false")]));
        let NetworkCmd::Set { args, .. } = parse(&["set", "br1", "a=1", "b=-2"]) else {
            panic!()
        };
        assert_eq!(set_args(&args).unwrap(), map(&[("a", "1"), ("b", "-2")]));
        assert!(set_args(&["ipv4.nat".into()]).is_err());
        assert!(matches!(
            parse(&["ls", "--format", "csv"]),
            NetworkCmd::List { remote: None, format } if format.format == Format::Csv
        ));
        assert!(matches!(
            parse(&["mv", "a", "b"]),
            NetworkCmd::Rename { .. }
        ));
        assert!(matches!(parse(&["rm", "a"]), NetworkCmd::Delete { .. }));
        assert!(matches!(
            parse(&["list-leases", "br1", "-f", "json"]),
            NetworkCmd::ListLeases { format, .. } if format.format == Format::Json
        ));
        for bad in [
            &["attach", "br1"][..],
            &["attach", "br1", "c1", "d", "i", "extra"],
            &["detach", "br1", "c1", "d", "extra"],
            &["get", "br1"],
            &["set", "br1"],
            &["unset", "br1", "a", "b"],
        ] {
            assert!(
                Cli::try_parse_from([&["rxc", "network"], bad].concat()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn list_rows_as_lxc_shows_them() {
        let mut br = network(
            "rxdbr0",
            "bridge",
            true,
            &[("ipv4.address", "10.0.3.1/24"), ("ipv6.address", "none")],
        );
        br.used_by = vec!["/1.0/profiles/default".into(), "/1.0/instances/c1".into()];
        br.status = "Created".into();
        br.description = "the bridge".into();
        let eth = network("eth10", "physical", false, &[]);
        let eth2 = network("eth2", "physical", false, &[]);
        let lo = network("lo", "loopback", false, &[]);
        let odd = network("odd", "unknown", false, &[]);
        let rows = list_rows(&[br, eth, lo, odd, eth2]);
        let want: Vec<Vec<String>> = [
            ["eth2", "physical", "NO", "", "", "", "0", ""],
            ["eth10", "physical", "NO", "", "", "", "0", ""],
            [
                "rxdbr0",
                "bridge",
                "YES",
                "10.0.3.1/24",
                "none",
                "the bridge",
                "2",
                "CREATED",
            ],
        ]
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
        assert_eq!(rows, want);
        let table = crate::output::table(&LIST_HEADERS, &rows[2..], false);
        assert_eq!(
            table.lines().nth(1).unwrap(),
            "|  NAME  |  TYPE  | MANAGED |    IPV4     | IPV6 | DESCRIPTION | USED BY |  STATE  |"
        );
    }

    #[test]
    fn leases_as_lxc_shows_them() {
        let lease = |host: &str, mac: &str, addr: &str, kind: &str| NetworkLease {
            hostname: host.into(),
            hwaddr: mac.into(),
            address: addr.into(),
            kind: kind.into(),
            location: "m1".into(),
        };
        let leases = [
            lease("c1", "00:16:3e:00:00:01", "10.0.3.10", "dynamic"),
            lease("", "00:16:3e:00:00:02", "10.0.3.11", "static"),
            lease("a1", "00:16:3e:00:00:03", "fd42::3", "gateway"),
        ];
        let (headers, rows) = lease_table(&leases, false);
        assert_eq!(headers, ["HOSTNAME", "MAC ADDRESS", "IP ADDRESS", "TYPE"]);
        let firsts: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r[0].as_str(), r[3].as_str()))
            .collect();
        assert_eq!(
            firsts,
            [("a1", "GATEWAY"), ("c1", "DYNAMIC"), ("", "STATIC")]
        );
        let (headers, rows) = lease_table(&leases, true);
        assert_eq!(headers.last(), Some(&"LOCATION"));
        assert_eq!(rows[0].last().map(String::as_str), Some("m1"));
    }

    #[test]
    fn info_as_lxc_prints_it() {
        let state: NetworkState = crate::connect::decode(serde_json::json!({
            "addresses": [
                {"family": "inet", "address": "10.0.3.1", "netmask": "24", "scope": "global"},
                {"family": "inet6", "address": "fe80::1", "netmask": "64", "scope": "link"}
            ],
            "counters": {"bytes_received": 1234567, "bytes_sent": 999,
                         "packets_received": 42, "packets_sent": 7},
            "hwaddr": "00:16:3e:aa:bb:cc",
            "mtu": 1500,
            "state": "up",
            "type": "broadcast",
            "bond": null,
            "bridge": {"id": "8000.00163eaabbcc", "stp": false, "forward_delay": 1500,
                       "vlan_default": 1, "vlan_filtering": true,
                       "upper_devices": ["veth1", "veth2"]},
            "vlan": null,
            "ovn": null
        }))
        .unwrap();
        assert_eq!(
            info_text("rxdbr0", &state),
            "Name: rxdbr0\n\
             MAC address: 00:16:3e:aa:bb:cc\n\
             MTU: 1500\n\
             State: up\n\
             Type: broadcast\n\
             \n\
             IP addresses:\n\
             \x20 inet\t10.0.3.1/24 (global)\n\
             \x20 inet6\tfe80::1/64 (link)\n\
             \n\
             Network usage:\n\
             \x20 Bytes received: 1.23MB\n\
             \x20 Bytes sent: 999B\n\
             \x20 Packets received: 42\n\
             \x20 Packets sent: 7\n\
             \n\
             Bridge:\n\
             \x20 ID: 8000.00163eaabbcc\n\
             \x20 STP: false\n\
             \x20 Forward delay: 1500\n\
             \x20 Default VLAN ID: 1\n\
             \x20 VLAN filtering: true\n\
             \x20 Upper devices: veth1, veth2\n"
        );
        let plain = NetworkState {
            vlan: Some(serde_json::json!({"lower_device": "eth0", "vid": 10})),
            ..Default::default()
        };
        let text = info_text("eth0.10", &plain);
        assert!(!text.contains("IP addresses"), "{text}");
        assert!(
            text.ends_with("\nVLAN:\n  Lower device: eth0\n  VLAN ID: 10\n"),
            "{text}"
        );
    }

    #[test]
    fn attach_builds_the_device_lxc_builds() {
        let managed = network("rxdbr0", "bridge", true, &[]);
        let host_bridge = network("br0", "bridge", false, &[]);
        let host_nic = network("eth0", "physical", false, &[]);
        let check = |nic: BTreeMap<String, String>, want: &[(&str, &str)]| {
            assert_eq!(nic, map(want));
        };
        check(
            instance_nic(&managed, "rxdbr0", true, None),
            &[("type", "nic"), ("network", "rxdbr0")],
        );
        check(
            instance_nic(&managed, "rxdbr0", true, Some("eth1")),
            &[("type", "nic"), ("network", "rxdbr0"), ("name", "eth1")],
        );
        // A server without `instance_nic_network` gets the older shape.
        check(
            instance_nic(&managed, "rxdbr0", false, None),
            &[
                ("type", "nic"),
                ("nictype", "bridged"),
                ("parent", "rxdbr0"),
            ],
        );
        check(
            instance_nic(&host_bridge, "br0", true, None),
            &[("type", "nic"), ("nictype", "bridged"), ("parent", "br0")],
        );
        check(
            instance_nic(&host_nic, "eth0", true, Some("mv0")),
            &[
                ("type", "nic"),
                ("nictype", "macvlan"),
                ("parent", "eth0"),
                ("name", "mv0"),
            ],
        );
        // Profiles: by parent, as lxc 5.0 attaches them, even to a managed network.
        check(
            parent_nic(&managed, "rxdbr0"),
            &[
                ("type", "nic"),
                ("nictype", "bridged"),
                ("parent", "rxdbr0"),
            ],
        );
        let mut devices = Devices::new();
        add_nic(&mut devices, "rxdbr0".into(), map(&[("type", "nic")])).unwrap();
        let err = add_nic(&mut devices, "rxdbr0".into(), map(&[])).unwrap_err();
        assert_eq!(err.to_string(), "Device already exists: rxdbr0");
    }

    #[test]
    fn detach_finds_the_device_lxc_finds() {
        let devices = Devices::from([
            ("root".into(), map(&[("type", "disk"), ("path", "/")])),
            (
                "eth0".into(),
                map(&[("type", "nic"), ("network", "rxdbr0")]),
            ),
            (
                "eth1".into(),
                map(&[("type", "nic"), ("nictype", "bridged"), ("parent", "br0")]),
            ),
            (
                "eth2".into(),
                map(&[("type", "nic"), ("nictype", "macvlan"), ("parent", "br0")]),
            ),
        ]);
        let check = |network: &str, device: Option<&str>, want: Result<&str, &str>| {
            let mut d = devices.clone();
            let got = remove_nic(&mut d, network, device).map_err(|e| e.to_string());
            match want {
                Ok(removed) => {
                    assert!(got.is_ok(), "{network} {device:?}: {got:?}");
                    assert!(!d.contains_key(removed));
                    assert_eq!(d.len(), devices.len() - 1);
                }
                Err(message) => assert_eq!(got.unwrap_err(), message, "{network} {device:?}"),
            }
        };
        check("rxdbr0", None, Ok("eth0"));
        check("br0", Some("eth2"), Ok("eth2"));
        check(
            "br0",
            None,
            Err("More than one device matches, specify the device name"),
        );
        check("lxdbr1", None, Err("No device found for this network"));
        check(
            "rxdbr0",
            Some("eth9"),
            Err("The specified device doesn't exist"),
        );
        check(
            "rxdbr0",
            Some("eth1"),
            Err("The specified device doesn't match the network"),
        );
        check(
            "rxdbr0",
            Some("root"),
            Err("The specified device doesn't match the network"),
        );
    }

    #[test]
    fn edits_send_both_writable_fields() {
        let put: NetworkPut = crate::edit::parse(
            "name: rxdbr0\nconfig:\n  ipv4.nat: true\n  ipv4.dhcp.expiry: 1h\nmanaged: true\n",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(writable(put)).unwrap(),
            serde_json::json!({
                "config": {"ipv4.nat": "true", "ipv4.dhcp.expiry": "1h"},
                "description": ""
            })
        );
    }
}
