//! Who may reach the API at all: the IP allowlist, applied before anything else, and the rule
//! for finding the client's address behind reverse proxies.
//!
//! # The X-Forwarded-For rule
//!
//! The header is read only when the connection's peer is itself a trusted proxy. Then it is
//! walked from right to left (each proxy appends the address it saw), skipping addresses that
//! are trusted proxies too; the first address that is not is the client. If every address is a
//! trusted proxy, the leftmost one is the client. A client can prepend anything it likes to the
//! header, but it cannot change what the trusted proxies appended after it, so the walk never
//! reaches the client's own text unless a trusted proxy vouched for it.
//!
//! An entry that is not an address (garbage, `unknown`, an obfuscated name) stops the walk: the
//! client cannot be identified, and [`AccessPolicy::client_ip`] returns the unspecified address
//! `0.0.0.0`, which no allowlist covers unless it allows every address anyway.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, as a dual-stack listener reports IPv4 peers)
//! are treated as the IPv4 address they carry, everywhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The allowlist and the trusted proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Networks that may reach the API.
    pub allow: Vec<IpNet>,
    /// Reverse proxies whose X-Forwarded-For header is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for AccessPolicy {
    /// Loopback only, no proxies.
    fn default() -> Self {
        AccessPolicy::new(None, Vec::new())
    }
}

impl AccessPolicy {
    /// A policy allowing `allow` (`None`: loopback only, see [`AccessPolicy::loopback`]), with
    /// `trusted_proxies`.
    pub fn new(allow: Option<Vec<IpNet>>, trusted_proxies: Vec<IpNet>) -> AccessPolicy {
        AccessPolicy { allow: allow.unwrap_or_else(AccessPolicy::loopback), trusted_proxies }
    }

    /// The networks allowed when the config has no `allow`: `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> Vec<IpNet> {
        vec![
            IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ]
    }

    /// The client's address for a connection from `peer` carrying the X-Forwarded-For header
    /// `forwarded_for` (several such headers joined with `,` in order).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted_proxy(peer) {
            return peer;
        }
        let Some(header) = forwarded_for.filter(|h| !h.trim().is_empty()) else {
            return peer;
        };
        let mut client = peer;
        for entry in header.rsplit(',') {
            let Some(address) = parse_entry(entry) else {
                return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            };
            client = address;
            if !self.is_trusted_proxy(address) {
                break;
            }
        }
        client
    }

    /// Whether `ip` is on the allowlist.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        covered(&self.allow, ip)
    }

    /// [`AccessPolicy::client_ip`] and [`AccessPolicy::is_allowed`] in one: `Ok(client)` to go
    /// on, `Err(client)` to answer 403 (and audit the address).
    pub fn admit(&self, peer: IpAddr, forwarded_for: Option<&str>) -> Result<IpAddr, IpAddr> {
        let client = self.client_ip(peer, forwarded_for);
        if self.is_allowed(client) { Ok(client) } else { Err(client) }
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        covered(&self.trusted_proxies, ip)
    }
}

/// Whether any of `nets` holds `ip`, comparing IPv4 addresses with IPv4-mapped networks too.
fn covered(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    nets.iter().any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

/// One X-Forwarded-For entry: an address, or an address with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:443`), optionally quoted.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let text = entry.trim().trim_matches('"');
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let address =
        text.parse::<IpAddr>().ok().or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip())).or_else(|| {
            text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).and_then(|t| t.parse::<IpAddr>().ok())
        })?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_in_their_usual_shapes() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_entry(" 203.0.113.7 "), Some(v4));
        assert_eq!(parse_entry("203.0.113.7:5123"), Some(v4));
        assert_eq!(parse_entry("\"[2001:db8::1]:443\""), Some(v6));
        assert_eq!(parse_entry("[2001:db8::1]"), Some(v6));
        assert_eq!(parse_entry("::ffff:203.0.113.7"), Some(v4));
        for bad in ["", "unknown", "_hidden", "203.0.113", "1.2.3.4.5", "[::1"] {
            assert_eq!(parse_entry(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn mapped_networks_cover_plain_ipv4() {
        let nets = vec!["::ffff:10.0.0.0/104".parse::<IpNet>().unwrap()];
        assert!(covered(&nets, "10.1.2.3".parse().unwrap()));
        assert!(!covered(&nets, "11.1.2.3".parse().unwrap()));
    }
}
