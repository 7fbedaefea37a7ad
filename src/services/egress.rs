//! Where iclear may send a request (SECURITY.md "Egress"), and how an
//! endpoint is shown. It parses endpoints and judges addresses; it sends
//! nothing itself (`http` resolves through `Guard`).
//!
//! Public addresses are allowed. A private, loopback, link-local,
//! unspecified or otherwise non-public address is allowed only when the
//! policy (`iclear.allowed_endpoints`: hosts and networks, comma-separated)
//! lists it or the endpoint's host name. An endpoint is judged when saved
//! (its host, where it is an address) and again at every call, on the
//! addresses its name resolves to then, which is what the connection uses:
//! a name that points elsewhere later is refused then.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::RwLock;

/// The parts of an `http(s)://` URL that the policy and the display need.
#[derive(Debug, PartialEq, Eq)]
pub struct Url<'a> {
    pub scheme: &'a str,
    pub userinfo: Option<&'a str>,
    /// The host as written (an IPv6 literal without its brackets).
    pub host: &'a str,
    pub port: Option<&'a str>,
    /// From the first `/` of the path to the query (may be empty).
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Split an endpoint; Err names what is wrong.
pub fn parse(url: &str) -> Result<Url<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "is not an http:// or https:// URL".to_string())?;
    if scheme != "http" && scheme != "https" {
        return Err("is not an http:// or https:// URL".into());
    }
    let rest = rest.split('#').next().unwrap_or("");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']').ok_or("has an unclosed [ in its host")?;
        let port = v6[close + 1..].strip_prefix(':');
        (&v6[..close], port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| format!("has an invalid port {p:?}"))?;
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains a space or a control character".into());
    }
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    Ok(Url {
        scheme,
        userinfo,
        host,
        port,
        path,
        query,
    })
}

/// The endpoint as iclear shows, logs and audits it: the user and password
/// and every query value (webhook URLs carry tokens there) replaced by
/// `***`. An endpoint without either is shown as it is.
pub fn shown(url: &str) -> String {
    let Ok(u) = parse(url) else {
        return url.split(['?', '@']).next().unwrap_or("").to_string();
    };
    if u.userinfo.is_none() && u.query.is_none() {
        return url.split('#').next().unwrap_or("").to_string();
    }
    let mut s = format!("{}://", u.scheme);
    if u.userinfo.is_some() {
        s.push_str("***@");
    }
    if u.host.contains(':') {
        s.push_str(&format!("[{}]", u.host));
    } else {
        s.push_str(u.host);
    }
    if let Some(p) = u.port {
        s.push(':');
        s.push_str(p);
    }
    s.push_str(u.path);
    if let Some(q) = u.query {
        let masked: Vec<String> = q
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => "***".to_string(),
            })
            .collect();
        s.push('?');
        s.push_str(&masked.join("&"));
    }
    s
}

/// A request URL built on `endpoint` as iclear logs it: the endpoint's own
/// part shown (`shown`), what the adapter added after it as it is.
pub fn shown_call(endpoint: &str, url: &str) -> String {
    match url.strip_prefix(endpoint) {
        Some(rest) if !rest.is_empty() => format!("{}{rest}", shown(endpoint)),
        _ => shown(url),
    }
}

/// An IPv4 address as `inet_aton` reads it (what the system resolver does
/// with a host such as `0x7f000001`, `2130706433` or `0177.0.0.1`): one to
/// four parts, each decimal, octal (leading 0) or hexadecimal (0x).
pub fn ipv4_like_inet_aton(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let n = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            u64::from_str_radix(h, 16).ok()?
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse::<u64>().ok()?
        } else {
            return None;
        };
        nums.push(n);
    }
    let (head, last) = nums.split_at(nums.len() - 1);
    if head.iter().any(|&n| n > 255) || last[0] >= 1u64 << (8 * (5 - nums.len())) {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i);
    }
    Some(Ipv4Addr::from((v | last[0]) as u32))
}

/// The host as an address, where it is one (a literal of any form the
/// system resolver accepts).
pub fn literal(host: &str) -> Option<IpAddr> {
    host.parse::<Ipv6Addr>()
        .map(IpAddr::V6)
        .ok()
        .or_else(|| ipv4_like_inet_aton(host).map(IpAddr::V4))
}

/// Why `ip` is not a public address (None: it is public).
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_private() {
                Some("a private address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("an unspecified address")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("a shared (carrier-grade NAT) address")
            } else if v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 {
                Some("a broadcast, multicast or reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("a private address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a broadcast, multicast or reserved address")
            } else {
                None
            }
        }
    }
}

/// `iclear.allowed_endpoints`: the hosts and networks a non-public address
/// may be reached at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Policy {
    networks: Vec<(IpAddr, u8)>,
    hosts: Vec<String>,
}

impl Policy {
    /// A comma-separated list of host names, addresses and networks in CIDR
    /// notation (`127.0.0.1`, `10.0.0.0/8`, `[::1]`, `vendor.internal`).
    pub fn parse(text: &str) -> Result<Policy, String> {
        let mut p = Policy::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (
                    a,
                    Some(
                        b.parse::<u8>()
                            .map_err(|_| format!("{item:?} has an invalid prefix length"))?,
                    ),
                ),
                None => (item, None),
            };
            let bare = addr.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<IpAddr>() {
                Ok(ip) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let bits = bits.unwrap_or(max);
                    if bits > max {
                        return Err(format!("{item:?} has a prefix longer than {max} bits"));
                    }
                    p.networks.push((ip, bits));
                }
                Err(_)
                    if bits.is_none()
                        && bare
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') =>
                {
                    p.hosts.push(bare.to_ascii_lowercase())
                }
                Err(_) => {
                    return Err(format!(
                        "{item:?} is neither a host name, an address nor a network"
                    ))
                }
            }
        }
        Ok(p)
    }

    fn lists(&self, host: &str, ip: IpAddr) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            || self
                .networks
                .iter()
                .any(|&(net, bits)| within(ip, net, bits))
    }

    /// Is `ip`, reached as `host`, allowed? Err says why not.
    pub fn allows(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        match non_public(ip) {
            Some(why) if !self.lists(host, ip) => {
                let seen = if host == ip.to_string() {
                    String::new()
                } else {
                    format!(" ({ip})")
                };
                Err(format!(
                    "{host} is {why}{seen} that iclear.allowed_endpoints does not list"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The check when an endpoint is saved: its form, and its host where
    /// that is an address (or `localhost`). A name is judged at every call,
    /// on what it resolves to then.
    pub fn check_endpoint(&self, url: &str) -> Result<(), String> {
        let u = parse(url)?;
        let host = u.host.trim_end_matches('.');
        if let Some(ip) = literal(host) {
            return self.allows(host, ip);
        }
        if host.eq_ignore_ascii_case("localhost")
            || host.to_ascii_lowercase().ends_with(".localhost")
        {
            return self.allows(host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        Ok(())
    }
}

fn within(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|v4| within(IpAddr::V4(v4), net, bits)),
        _ => false,
    }
}

static POLICY: RwLock<Option<(String, Policy)>> = RwLock::new(None);

/// Make `text` (the setting's value) the policy every call is judged by.
/// Cheap when it has not changed. Err: the setting cannot be read (the
/// policy then allows public addresses only).
pub fn set_policy(text: &str) -> Result<(), String> {
    if let Ok(g) = POLICY.read() {
        if g.as_ref().is_some_and(|(t, _)| t == text) {
            return Ok(());
        }
    }
    let parsed = Policy::parse(text);
    let policy = parsed.clone().unwrap_or_default();
    if let Ok(mut g) = POLICY.write() {
        *g = Some((text.to_string(), policy));
    }
    parsed.map(|_| ())
}

/// The policy in force.
pub fn policy() -> Policy {
    POLICY
        .read()
        .ok()
        .and_then(|g| g.as_ref().map(|(_, p)| p.clone()))
        .unwrap_or_default()
}

/// The addresses a connection may use: those of `addrs` the policy allows
/// for `host`; Err when none is (naming why the first was refused).
pub fn filter(host: &str, addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, String> {
    let p = policy();
    let mut refused = None;
    let ok: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| match p.allows(host, a.ip()) {
            Ok(()) => true,
            Err(e) => {
                refused.get_or_insert(e);
                false
            }
        })
        .collect();
    match (ok.is_empty(), refused) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(format!("{host} resolves to no address")),
        _ => Ok(ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_shown_without_their_secrets() {
        assert_eq!(
            shown("http://smsuser:SMS-PASS-5@127.0.0.1:56601/sms?token=SMSQUERYTOKEN"),
            "http://***@127.0.0.1:56601/sms?token=***"
        );
        assert_eq!(
            shown("https://h.example/track?sig=T&x=1#frag"),
            "https://h.example/track?sig=***&x=***"
        );
        assert_eq!(shown("https://h.example/ip"), "https://h.example/ip");
        assert_eq!(shown("http://[::1]:80/a?b"), "http://[::1]:80/a?***");
    }

    #[test]
    fn inet_aton_forms_are_addresses() {
        assert_eq!(ipv4_like_inet_aton("0x7f000001"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(ipv4_like_inet_aton("2130706433"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(ipv4_like_inet_aton("0177.0.0.1"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(ipv4_like_inet_aton("127.1"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            ipv4_like_inet_aton("169.254.169.254"),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        assert_eq!(ipv4_like_inet_aton("api.example.com"), None);
        assert_eq!(ipv4_like_inet_aton("256.1.1.1"), None);
    }

    #[test]
    fn the_policy_refuses_what_it_does_not_list() {
        let none = Policy::parse("").unwrap();
        for url in [
            "http://127.0.0.1:5432/",
            "http://169.254.169.254/latest",
            "http://[::1]:56600/",
            "http://0x7f000001:56601/ip",
            "http://127.0.0.1:56601@10.0.0.1/ip",
            "http://localhost/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://100.64.0.1/",
        ] {
            assert!(none.check_endpoint(url).is_err(), "{url}");
        }
        assert!(none
            .check_endpoint("https://ipqualityscore.com/api/json/ip")
            .is_ok());
        assert!(none.check_endpoint("https://93.184.216.34/").is_ok());
        let sandbox = Policy::parse("127.0.0.1").unwrap();
        assert!(sandbox.check_endpoint("http://127.0.0.1:56601/ip").is_ok());
        assert!(sandbox.check_endpoint("http://0x7f000001:56601/ip").is_ok());
        assert!(sandbox.check_endpoint("http://127.0.0.2/").is_err());
        assert!(sandbox.check_endpoint("http://169.254.169.254/").is_err());
        let nets = Policy::parse("10.0.0.0/8, [::1], vendor.internal").unwrap();
        assert!(nets.allows("x", "10.1.2.3".parse().unwrap()).is_ok());
        assert!(nets.allows("x", "::1".parse().unwrap()).is_ok());
        assert!(nets
            .allows("vendor.internal", "192.168.1.1".parse().unwrap())
            .is_ok());
        assert!(nets
            .allows("other", "192.168.1.1".parse().unwrap())
            .is_err());
        assert!(Policy::parse("10.0.0.0/40").is_err());
        assert!(Policy::parse("not a host!").is_err());
        assert!(none.check_endpoint("http://a b/").is_err());
    }
}
