//! Managed bridge networks (LXD's `bridge` driver, rxd's v1 subset): the pure rules the daemon's
//! network code calls. `config` is the key registry and the typed config; `subnet` picks `auto`
//! subnets; `dnsmasq` builds dnsmasq's argv and hosts files and reads its leases; `nft` builds
//! the nftables ruleset; `mac` holds MAC arithmetic. Nothing here touches a link, a socket, a
//! file, a clock or a random source: everything it needs is handed in.

pub mod config;
pub mod dnsmasq;
pub mod mac;
pub mod nft;
pub mod subnet;
