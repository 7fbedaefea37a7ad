//! The HTTP client: ureq with a bounded overall timeout per request. One
//! agent per timeout value (1..5 s), so connections are reused.

use std::sync::OnceLock;
use std::time::Duration;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// A response of any status (statuses are the adapters' to judge).
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// A request that got no HTTP response.
pub struct Failure {
    pub timed_out: bool,
    pub message: String,
}

/// The system resolver, then the egress policy (`egress::filter`) on what
/// it answered: a connection only ever goes to an address the policy
/// allows, whatever the name pointed to when the endpoint was saved.
#[derive(Debug, Default)]
struct Guard(DefaultResolver);

impl Resolver for Guard {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
        // An address needs no lookup: ureq's resolver starts a thread for
        // every lookup that has a timeout, even of an address, and a
        // request resolves before it takes a pooled connection.
        let found = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                let port = uri
                    .port_u16()
                    .unwrap_or(if uri.scheme_str() == Some("https") {
                        443
                    } else {
                        80
                    });
                let mut one = self.0.empty();
                one.push(std::net::SocketAddr::new(ip, port));
                one
            }
            Err(_) => self.0.resolve(uri, config, timeout)?,
        };
        let allowed = crate::egress::filter(host, &found).map_err(|e| {
            ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))
        })?;
        let mut out = self.0.empty();
        for a in allowed {
            out.push(a);
        }
        Ok(out)
    }
}

fn agent(timeout_s: u8) -> &'static ureq::Agent {
    static AGENTS: [OnceLock<ureq::Agent>; 6] = [const { OnceLock::new() }; 6];
    let t = timeout_s.clamp(1, 5);
    AGENTS[t as usize].get_or_init(|| {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(t.into())))
            .http_status_as_error(false)
            // an API answers where it is asked: a redirect is not followed,
            // so no request (with its key in the path or its Authorization)
            // is sent on to a host the admin did not configure
            .max_redirects(0)
            .user_agent("iclear")
            // kept-alive connections for the calls a worker round runs at
            // once to one vendor (ureq keeps 3 a host by default)
            .max_idle_connections(64)
            .max_idle_connections_per_host(16)
            .build();
        ureq::Agent::with_parts(config, DefaultConnector::new(), Guard::default())
    })
}

fn failure(e: ureq::Error) -> Failure {
    let timed_out = match &e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        _ => false,
    };
    Failure {
        timed_out,
        message: e.to_string(),
    }
}

fn read(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, Failure> {
    let mut r = r.map_err(failure)?;
    let status = r.status().as_u16();
    // vendors answer a few KB; anything bigger is not theirs
    let body = r
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(failure)?;
    Ok(Reply { status, body })
}

pub fn get(url: &str, timeout_s: u8) -> Result<Reply, Failure> {
    read(agent(timeout_s).get(url).call())
}

pub fn post_json(
    url: &str,
    authorization: &str,
    body: &str,
    timeout_s: u8,
) -> Result<Reply, Failure> {
    let mut req = agent(timeout_s)
        .post(url)
        .header("Content-Type", "application/json");
    if !authorization.is_empty() {
        req = req.header("Authorization", authorization);
    }
    read(req.send(body))
}

/// Percent-encode a path segment or query value (RFC 3986 unreserved kept),
/// as the engine encodes a URL template's placeholders.
pub fn encode(s: &str) -> String {
    iclear_engine::placeholders::url_encode(s)
}

/// Standard base64 (RFC 4648) for HTTP Basic credentials.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn calls_reuse_their_connection() {
        crate::egress::set_policy("127.0.0.1").unwrap();
        let sb = crate::sandbox::Sandbox::start("127.0.0.1:0").unwrap();
        let url = format!("{}/ip/k/10.1.2.3", sb.base_url());
        for _ in 0..5 {
            let r = super::get(&url, 2).map_err(|f| f.message).unwrap();
            assert_eq!(r.status, 200);
        }
        assert_eq!(sb.count("ip"), 5);
        assert_eq!(sb.connections(), 1, "five calls, one kept-alive connection");
    }

    #[test]
    fn base64_and_encode() {
        assert_eq!(super::base64(b"acct:token"), "YWNjdDp0b2tlbg==");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(super::encode("a b/c"), "a%20b%2Fc");
    }
}
