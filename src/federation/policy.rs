//! Where outbound requests may go. A stranger chooses the names lmx looks
//! up (an `X-Matrix` origin, a notary query, a well-known redirect), so the
//! address a name resolves to is checked before connecting: loopback,
//! private, link-local, unique-local, multicast, unspecified and other
//! special-purpose ranges are refused unless the operator allows them
//! (`federation.allow_ip_ranges`; names in `federation.resolve` are exempt).
//! The check is on the resolved address, so every spelling of one
//! (`127.1`, `2130706433`, `[::ffff:127.0.0.1]`) meets the same rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address may not be dialled, if it may not.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "unspecified",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "shared address space",
        (169, 254, _) => "link-local",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (192, 88, 99) => "special-purpose",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved or broadcast",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address: judge that address.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated) `::a.b.c.d`.
        return forbidden_v4(embedded(s[6], s[7])).or(Some("IPv4-compatible"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2]));
    }
    Some(match s[0] {
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xfe00 == 0xfc00 => "unique-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x0100 if s[1..4] == [0, 0, 0] => "discard",
        _ => return None,
    })
}

/// The operator's exceptions to `forbidden`.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        AddressPolicy { allow }
    }

    /// `Err(why)` when `ip` may not be dialled.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = crate::http::canonical_ip(ip);
        match forbidden(ip) {
            Some(_) if self.allow.iter().any(|n| n.contains(&ip)) => Ok(()),
            Some(why) => Err(format!("{ip} is a {why} address (federation.allow_ip_ranges)")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_are_refused_in_every_spelling() {
        let p = AddressPolicy::default();
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "127.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(p.check(ip(bad)).is_err(), "{bad} must be refused");
        }
        for good in ["1.1.1.1", "172.32.0.1", "192.169.0.1", "2606:4700::1111", "2002:0101:0101::", "64:ff9b::101:101"]
        {
            assert!(p.check(ip(good)).is_ok(), "{good} is a public address");
        }
        // `127.1` and `2130706433` are host names the resolver turns into
        // 127.0.0.1; the check meets them as that address.
        assert_eq!("127.0.0.1".parse::<Ipv4Addr>().unwrap(), Ipv4Addr::from(2130706433));
    }

    #[test]
    fn allowed_ranges_are_exempt() {
        let p = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check(ip("::1")).is_ok());
        assert!(p.check(ip("10.0.0.1")).is_err());
    }
}
