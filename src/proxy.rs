//! Who the client is behind reverse proxies: the trust model reverse proxies themselves use.
//!
//! Only a request whose peer is a trusted proxy (`intake.trusted_proxies`) has its forwarding
//! header read at all; from anyone else the header is the client's own words and is ignored. The
//! header's addresses are read right to left over every line (each proxy appends the address it
//! saw), skipping trusted proxies; the first address that is not one is the client. Everything to
//! its left was written by the client or by proxies we do not know, so it is never believed.
//! Ports are stripped and IPv6 forms (`::1`, `[::1]`, `[::1]:443`, Forwarded's quoted
//! `"[2001:db8::1]:4711"`) are read; IPv4-mapped IPv6 addresses count as IPv4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::http::header::HeaderMap;

/// An address block such as `10.0.0.0/8`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Reads `a.b.c.d/n`, `x::y/n` or a bare address (a block of one).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| "not an IP address or CIDR block such as 10.0.0.0/8".to_owned())?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `address` lies in this block.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Which forwarding header the trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (de facto standard).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardingHeader {
    /// Reads the configuration's spelling (either header's name, any case).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("x-forwarded-for") {
            Ok(Self::XForwardedFor)
        } else if text.eq_ignore_ascii_case("forwarded") {
            Ok(Self::Forwarded)
        } else {
            Err("must be `X-Forwarded-For` or `Forwarded`".to_owned())
        }
    }
}

/// The configured proxies and the header they write.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
    header: ForwardingHeader,
}

impl TrustedProxies {
    /// Proxies from the configuration's CIDR list; entries that do not parse are left out
    /// (configuration validation refuses them before this runs).
    pub fn new(blocks: &[String], header: ForwardingHeader) -> Self {
        Self {
            blocks: blocks.iter().filter_map(|b| Cidr::parse(b).ok()).collect(),
            header,
        }
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(address))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops = match self.header {
            ForwardingHeader::XForwardedFor => forwarded_for(headers),
            ForwardingHeader::Forwarded => forwarded(headers),
        };
        // The nearest hop we know: the peer, then each trusted proxy walking leftwards.
        let mut nearest = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(address) if self.is_trusted(*address) => nearest = *address,
                Some(address) => return *address,
                // `unknown`, an obfuscated name or garbage, written by a proxy we trust: the
                // client is hidden from us, and the proxy that wrote it is the best we know.
                None => return nearest,
            }
        }
        nearest
    }
}

/// Every `X-Forwarded-For` element, over all header lines in order; `None` for one that is not
/// an address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .flat_map(|line| line.to_str().unwrap_or("?").split(','))
        .map(|element| parse_node(element.trim()))
        .collect()
}

/// Every `for=` of every `Forwarded` element, over all header lines in order.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("forwarded")
        .flat_map(|line| line.to_str().unwrap_or("for=?").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// An address with or without a port: `192.0.2.1`, `192.0.2.1:80`, `::1`, `[::1]`, `[::1]:443`.
pub fn parse_node(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return address
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| IpAddr::V6(a).to_canonical());
    }
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    let (address, port) = text.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    address.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// The key one client's requests are counted under: the address, or its /64 for IPv6, since
/// one IPv6 subscriber usually holds a whole /64 and could otherwise rotate through it.
pub fn limit_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn proxies(blocks: &[&str], header: ForwardingHeader) -> TrustedProxies {
        let blocks: Vec<String> = blocks.iter().map(|b| (*b).to_owned()).collect();
        TrustedProxies::new(&blocks, header)
    }

    #[test]
    fn cidr_blocks_match_their_addresses_only() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains(ip("10.1.200.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.0.1")), "IPv4-mapped counts");
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::7")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.local").is_err());
        assert_eq!(Cidr::parse("192.0.2.1").unwrap().prefix, 32);
    }

    #[test]
    fn every_address_form_is_read_with_its_port_stripped() {
        for (text, expected) in [
            ("192.0.2.1", "192.0.2.1"),
            ("192.0.2.1:8443", "192.0.2.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[::1]:443", "::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("::ffff:192.0.2.9", "192.0.2.9"),
        ] {
            assert_eq!(parse_node(text), Some(ip(expected)), "{text}");
        }
        for garbage in [
            "",
            "unknown",
            "_hidden",
            "192.0.2.1:",
            "[::1",
            "[::1]x",
            "1.2.3.4:99999x",
        ] {
            assert_eq!(parse_node(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let trusted = proxies(&["10.0.0.0/8"], ForwardingHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(trusted.client(ip("203.0.113.5"), &h), ip("203.0.113.5"));
        let nobody = proxies(&[], ForwardingHeader::XForwardedFor);
        assert_eq!(nobody.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_address_over_all_lines_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"], ForwardingHeader::XForwardedFor);
        // The client forged a first line and a left-most value; our proxies appended the rest.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7:51234"),
            ("x-forwarded-for", "10.0.0.9"),
        ]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("198.51.100.7"));
        // Only proxies in the chain: the left-most one is as close to a client as there is.
        let h = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.8")]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("10.0.0.7"));
        // No header at all: the peer.
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
        // Garbage written right of the client stops the walk at the proxy that wrote it.
        let h = headers(&[("x-forwarded-for", "198.51.100.7, nonsense, 10.0.0.9")]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn forwarded_is_read_with_quotes_ports_and_ipv6() {
        let trusted = proxies(
            &["10.0.0.0/8", "2001:db8:ffff::/48"],
            ForwardingHeader::Forwarded,
        );
        let h = headers(&[
            ("forwarded", "for=6.6.6.6"),
            (
                "forwarded",
                r#"for="[2001:db8::1]:4711";proto=https, For=10.0.0.3"#,
            ),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        assert_eq!(
            trusted.client(ip("2001:db8:ffff::1"), &h),
            ip("2001:db8::1"),
            "X-Forwarded-For is not read when Forwarded is configured"
        );
        let h = headers(&[("forwarded", "for=unknown;by=10.0.0.1")]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
