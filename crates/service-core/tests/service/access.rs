use std::net::IpAddr;

use ipnet::IpNet;
use tidemark_service_core::AccessPolicy;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// Allows 10.0.0.0/8 and 2001:db8::/32; the proxies are 10.0.0.5 and fd00::1.
fn policy() -> AccessPolicy {
    AccessPolicy::new(Some(nets(&["10.0.0.0/8", "2001:db8::/32"])), nets(&["10.0.0.5/32", "fd00::1/128"]))
}

#[test]
fn peer_header_and_trust_matrix() {
    let p = policy();
    // (peer, X-Forwarded-For, client, allowed)
    let cases = [
        // Direct connections: the header is ignored, whatever it says.
        ("10.1.2.3", None, "10.1.2.3", true),
        ("10.1.2.3", Some("127.0.0.1"), "10.1.2.3", true),
        ("198.51.100.9", Some("10.1.2.3"), "198.51.100.9", false),
        ("198.51.100.9", None, "198.51.100.9", false),
        // Through the trusted proxy: the header names the client.
        ("10.0.0.5", Some("10.7.7.7"), "10.7.7.7", true),
        ("10.0.0.5", Some("198.51.100.9"), "198.51.100.9", false),
        // A client's own forged entries on the left are never reached.
        ("10.0.0.5", Some("10.9.9.9, 198.51.100.9"), "198.51.100.9", false),
        // Chains of trusted proxies are skipped, right to left.
        ("10.0.0.5", Some("10.7.7.7, fd00::1, 10.0.0.5"), "10.7.7.7", true),
        ("fd00::1", Some("2001:db8::42"), "2001:db8::42", true),
        // Only trusted proxies in the header: the leftmost is the client.
        ("10.0.0.5", Some("10.0.0.5"), "10.0.0.5", true),
        // A trusted proxy without the header is the client itself.
        ("10.0.0.5", None, "10.0.0.5", true),
        ("10.0.0.5", Some("  "), "10.0.0.5", true),
        // Ports and brackets as some proxies write them.
        ("10.0.0.5", Some("10.7.7.7:51234"), "10.7.7.7", true),
        ("10.0.0.5", Some("[2001:db8::42]:443"), "2001:db8::42", true),
    ];
    for (peer, header, client, allowed) in cases {
        assert_eq!(p.client_ip(ip(peer), header), ip(client), "{peer} {header:?}");
        assert_eq!(p.is_allowed(ip(client)), allowed, "{client}");
        let admitted = p.admit(ip(peer), header);
        assert_eq!(admitted, if allowed { Ok(ip(client)) } else { Err(ip(client)) }, "{peer} {header:?}");
    }
}

#[test]
fn ipv4_mapped_peers_are_their_ipv4_address() {
    let p = policy();
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    assert_eq!(p.client_ip(ip("::ffff:10.1.2.3"), None), ip("10.1.2.3"));
    assert!(p.is_allowed(ip("::ffff:10.1.2.3")));
    assert!(!p.is_allowed(ip("::ffff:198.51.100.9")));
    // The mapped form of a trusted proxy is trusted, and mapped header entries are unwrapped.
    assert_eq!(p.client_ip(ip("::ffff:10.0.0.5"), Some("::ffff:10.7.7.7")), ip("10.7.7.7"));
    // Loopback through the mapped form too.
    let local = AccessPolicy::default();
    assert!(local.is_allowed(ip("::ffff:127.0.0.1")));
    assert!(local.is_allowed(ip("::1")));
    assert!(!local.is_allowed(ip("::ffff:10.0.0.1")));
}

#[test]
fn malformed_headers_identify_no_one() {
    let p = AccessPolicy::new(Some(nets(&["0.0.0.0/0", "::/0"])), nets(&["10.0.0.5/32"]));
    let strict = policy();
    let unspecified = ip("0.0.0.0");
    for header in
        ["garbage", "10.7.7.7,", ", 10.7.7.7,", "unknown", "10.7.7.7, _hidden", "999.1.1.1", "10.7.7.7 10.8.8.8"]
    {
        assert_eq!(strict.client_ip(ip("10.0.0.5"), Some(header)), unspecified, "{header:?}");
        assert!(strict.admit(ip("10.0.0.5"), Some(header)).is_err(), "{header:?}");
        // Only an allowlist that admits everyone admits the unidentified.
        assert!(p.admit(ip("10.0.0.5"), Some(header)).is_ok(), "{header:?}");
    }
    // Garbage to the left of an untrusted client does not matter: the walk stops before it.
    assert_eq!(strict.client_ip(ip("10.0.0.5"), Some("garbage, 10.7.7.7")), ip("10.7.7.7"));
    // From an untrusted peer the header is not even read.
    assert_eq!(strict.client_ip(ip("10.1.2.3"), Some("garbage")), ip("10.1.2.3"));
}

#[test]
fn loopback_is_the_default() {
    let p = AccessPolicy::default();
    assert_eq!(p.allow, AccessPolicy::loopback());
    assert!(p.trusted_proxies.is_empty());
    assert!(p.is_allowed(ip("127.0.0.1")) && p.is_allowed(ip("127.255.0.1")) && p.is_allowed(ip("::1")));
    assert!(!p.is_allowed(ip("192.168.1.1")) && !p.is_allowed(ip("::2")));
    // With no trusted proxy, a header from loopback is ignored.
    assert_eq!(p.client_ip(ip("127.0.0.1"), Some("203.0.113.1")), ip("127.0.0.1"));
}
