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
        let found = self.0.resolve(uri, config, timeout)?;
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
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
    fn base64_and_encode() {
        assert_eq!(super::base64(b"acct:token"), "YWNjdDp0b2tlbg==");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(super::encode("a b/c"), "a%20b%2Fc");
    }
}
