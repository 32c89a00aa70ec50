//! Where tenants' code may connect: the one table of address ranges berth
//! refuses by default ([`REFUSED`]), the networks an app opens with
//! `allowed_networks` ([`AllowedNetworks`]), for both kinds of app.
//!
//! A Wasm guest's outbound connection is checked against [`is_internal`]
//! (which reads [`REFUSED`]) at connect time; a container's egress is
//! dropped by one firewall rule per IPv4 entry of [`REFUSED`], in the same
//! order. An entry of `allowed_networks` lets both through to the addresses
//! it covers. Neither opens the host itself: its own addresses and loopback
//! stay refused (see [`crate::own_addrs`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

/// Most entries in one app's `allowed_networks`.
pub const MAX_ALLOWED_NETWORKS: usize = 32;
/// Shortest IPv4 prefix an `allowed_networks` entry may have.
pub const MIN_PREFIX_V4: u8 = 8;
/// Shortest IPv6 prefix an `allowed_networks` entry may have.
pub const MIN_PREFIX_V6: u8 = 16;

/// An IP network: an address with no bits set past its prefix, and the
/// prefix length (`10.20.0.0/16`, `fd00::/8`, `203.0.113.7/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(first: u16, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V6(Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 0)),
            prefix,
        }
    }

    const fn v6_host(addr: Ipv6Addr) -> Self {
        Self {
            addr: IpAddr::V6(addr),
            prefix: 128,
        }
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the network (an IPv4 address is never in an IPv6
    /// network, nor the other way round).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && first_of(ip, self.prefix) == self.addr
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Network) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

/// `ip` with every bit past the first `prefix` cleared.
fn first_of(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Network {
    type Err = String;

    /// `address/prefix`, the address with no bits set past the prefix.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a network like 10.20.0.0/16 or fd00::/8"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}`: `{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{s}`: the prefix length must be from 0 to {max}"))?;
        let net = Self { addr, prefix };
        let first = first_of(addr, prefix);
        if first != addr {
            return Err(format!(
                "`{s}` has bits set past its prefix: the network is {first}/{prefix}"
            ));
        }
        Ok(net)
    }
}

/// One refused range and why.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// The range.
    pub network: Network,
    /// What it is.
    pub what: &'static str,
}

const fn refused(network: Network, what: &'static str) -> Refused {
    Refused { network, what }
}

/// The ranges no tenant's code reaches unless its app opens them: the
/// single table both the Wasm connect-time check and the containers'
/// firewall rules are made from. IPv4-mapped (`::ffff:0:0/96`),
/// IPv4-compatible (`::/96`) and NAT64 (`64:ff9b::/96`) IPv6 addresses are
/// judged by the IPv4 address they carry.
pub const REFUSED: &[Refused] = &[
    refused(Network::v4(0, 0, 0, 0, 8), "\"this network\""),
    refused(Network::v4(10, 0, 0, 0, 8), "private"),
    refused(Network::v4(100, 64, 0, 0, 10), "shared (CGNAT)"),
    refused(Network::v4(127, 0, 0, 0, 8), "loopback"),
    refused(
        Network::v4(169, 254, 0, 0, 16),
        "link-local (cloud metadata)",
    ),
    refused(Network::v4(172, 16, 0, 0, 12), "private"),
    refused(Network::v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    refused(Network::v4(192, 168, 0, 0, 16), "private"),
    refused(Network::v4(198, 18, 0, 0, 15), "benchmarking"),
    refused(Network::v4(224, 0, 0, 0, 4), "multicast"),
    refused(Network::v4(240, 0, 0, 0, 4), "reserved and broadcast"),
    refused(Network::v6_host(Ipv6Addr::UNSPECIFIED), "unspecified"),
    refused(Network::v6_host(Ipv6Addr::LOCALHOST), "loopback"),
    refused(Network::v6(0xfc00, 7), "unique local (ULA)"),
    refused(Network::v6(0xfe80, 10), "link-local"),
    refused(Network::v6(0xff00, 8), "multicast"),
];

/// The IPv4 address an IPv6 address carries, if it is IPv4-mapped,
/// IPv4-compatible (not `::` or `::1`) or NAT64 (`64:ff9b::/96`).
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = v6.segments();
    let embedded = (seg[..6] == [0; 6] && (seg[6] != 0 || seg[7] > 1))
        || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    embedded.then(|| {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    })
}

/// `ip`, with an IPv6 address that carries an IPv4 one replaced by it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The entry of [`REFUSED`] that holds `ip` (judged by [`canonical`]).
pub fn refused_range(ip: IpAddr) -> Option<&'static Refused> {
    let ip = canonical(ip);
    REFUSED.iter().find(|r| r.network.contains(ip))
}

/// Whether `ip` is in a range of [`REFUSED`]: loopback, private, shared,
/// link-local (with the cloud metadata address 169.254.169.254), ULA,
/// multicast, reserved and the like.
pub fn is_internal(ip: IpAddr) -> bool {
    refused_range(ip).is_some()
}

/// An app's `allowed_networks`: networks in refused ranges its code may
/// reach all the same. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Arc<[Network]>);

impl AllowedNetworks {
    /// Parses and checks the entries: at most [`MAX_ALLOWED_NETWORKS`], each
    /// a network (`10.20.0.0/16`) no wider than /[`MIN_PREFIX_V4`] (IPv4) or
    /// /[`MIN_PREFIX_V6`] (IPv6), none holding a loopback or unspecified
    /// address (the host itself is opened only by a literal entry of
    /// `allowed_outbound_hosts`, and only to Wasm apps).
    ///
    /// # Errors
    /// The first entry refused, and why.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        if entries.len() > MAX_ALLOWED_NETWORKS {
            return Err(format!(
                "{} entries: at most {MAX_ALLOWED_NETWORKS} networks may be listed",
                entries.len()
            ));
        }
        let host_itself = [
            Network::v4(127, 0, 0, 0, 8),
            Network::v4(0, 0, 0, 0, 8),
            Network::v6_host(Ipv6Addr::LOCALHOST),
            Network::v6_host(Ipv6Addr::UNSPECIFIED),
            // IPv4-mapped loopback and the rest: judged as IPv4 anyway.
            Network {
                addr: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)),
                prefix: 96,
            },
        ];
        let nets = entries
            .iter()
            .map(|e| {
                let net: Network = e.trim().parse()?;
                let min = if net.addr.is_ipv4() {
                    MIN_PREFIX_V4
                } else {
                    MIN_PREFIX_V6
                };
                if net.prefix < min {
                    return Err(format!(
                        "`{e}` is wider than /{min}: list the networks themselves"
                    ));
                }
                if let Some(h) = host_itself.iter().find(|h| h.overlaps(&net)) {
                    return Err(format!(
                        "`{e}` holds {h}, the host itself: list a literal address in allowed_outbound_hosts instead (Wasm apps only)"
                    ));
                }
                Ok(net)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self(nets.into()))
    }

    /// Whether `ip` (judged by [`canonical`]) is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The networks.
    pub fn networks(&self) -> &[Network] {
        &self.0
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_ranges() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
        ] {
            assert!(is_internal(ip(a)), "{a}");
        }
        for a in [
            "8.8.8.8",
            "203.0.113.7",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "2001:db8::1",
            "2606:4700::1",
            "fec0::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip(a)), "{a}");
        }
        assert_eq!(
            refused_range(ip("100.100.1.1")).unwrap().what,
            "shared (CGNAT)"
        );
        assert_eq!(
            refused_range(ip("fd12::1")).unwrap().what,
            "unique local (ULA)"
        );
    }

    #[test]
    fn networks_parse_and_contain() {
        let n: Network = "10.20.0.0/16".parse().unwrap();
        assert!(n.contains(ip("10.20.255.1")));
        assert!(!n.contains(ip("10.21.0.1")));
        assert!(
            !n.contains(ip("::ffff:10.20.0.1")),
            "only canonical addresses"
        );
        let n: Network = "fd00::/8".parse().unwrap();
        assert!(n.contains(ip("fd12::1")));
        assert!(!n.contains(ip("fe80::1")));
        assert!(
            "0.0.0.0/0"
                .parse::<Network>()
                .unwrap()
                .contains(ip("1.2.3.4"))
        );
        for (bad, why) in [
            (
                "10.20.0.1/16",
                "bits set past its prefix: the network is 10.20.0.0/16",
            ),
            ("10.20.0.0", "not a network"),
            ("10.20.0.0/33", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("example.com/8", "not an IP address"),
        ] {
            let e = bad.parse::<Network>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn allowed_networks_are_bounded() {
        let parse = |e: &[&str]| {
            AllowedNetworks::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let ok = parse(&["10.20.0.0/16", "fd00:1::/32", "192.168.7.9/32"]).unwrap();
        assert!(ok.contains(ip("10.20.3.4")));
        assert!(ok.contains(ip("::ffff:10.20.3.4")));
        assert!(ok.contains(ip("fd00:1::5")));
        assert!(!ok.contains(ip("10.21.0.1")));
        assert!(parse(&["0.0.0.0/0"]).unwrap_err().contains("wider than /8"));
        assert!(parse(&["::/0"]).unwrap_err().contains("wider than /16"));
        assert!(
            parse(&["127.0.0.0/8"])
                .unwrap_err()
                .contains("the host itself")
        );
        assert!(parse(&["::1/128"]).unwrap_err().contains("the host itself"));
        assert!(
            parse(&["::ffff:0:0/96"])
                .unwrap_err()
                .contains("the host itself")
        );
        let many: Vec<String> = (0..=MAX_ALLOWED_NETWORKS)
            .map(|i| format!("10.{i}.0.0/16"))
            .collect();
        assert!(
            AllowedNetworks::parse(&many)
                .unwrap_err()
                .contains("at most 32 networks")
        );
    }
}
