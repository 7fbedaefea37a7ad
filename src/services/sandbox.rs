//! The sandbox provider: a small HTTP/1.1 server on loopback that answers the
//! vendors' protocols deterministically from the request, so the demo and the
//! tests run the real HTTP path with no internet (docs/architecture.md "Services and the worker"). It refuses to
//! listen on anything but a loopback address.
//!
//! Answers (docs/reference/configuration.md "Sandbox provider" lists them for users):
//! - `GET /ip/{key}/{a.b.c.d}`: fraud_score = d mod 101, country_code by c mod 8
//!   (US, US, US, CA, GB, MX, DE, IN), mobile when b is odd, proxy from 75,
//!   vpn from 85, tor from 95, recent_abuse from 90. Key "invalid" or a
//!   non-IPv4 value: `success: false`. 192.0.2.1 never answers in time
//!   (10 s), 192.0.2.2 is `success: false`, 192.0.2.3 is HTTP 500,
//!   192.0.2.4 is HTTP 200 with a body that is not JSON;
//!   198.51.100.N answers after N×10 ms.
//! - `GET /phone/{key}/{digits}`: from the last digits d: fraud_score = last
//!   two, valid when 10+ digits, active unless the 3rd last is 9, prepaid when
//!   the 4th last is 1, line_type by the 5th last (Landline, Mobile, VOIP,
//!   Toll Free, Satellite, Premium Rate, Pager, Mobile…), carrier by the 6th
//!   last, timezone by the 7th last, spammer from 90, country GB for 44…
//!   else US. Ending 0000: no answer in time; 0001: `success: false`; 0002: 500.
//! - `POST /iclaim/{session}` needs HTTP Basic (else 401): a session starting
//!   "fail" is `outcome: failure`, "err" HTTP 500 `outcome: error`, "slow"
//!   answers after 10 s, anything else `outcome: success` with `expires_at`.
//! - The vendors' documented payloads (src/services/fixtures), verbatim: key
//!   `fixture` (IP and phone success), key `invalid` (IPQS's invalid-key
//!   answer); iClaim sessions `fixture-success`, `fixture-scan` (outcome
//!   failure), `fixture-expired` (404), `fixture-unauthorized` (401), and
//!   `fixture-<status>` for TrustedForm's other documented errors.
//! - `POST /sms`: accepts any JSON message (`{"status": "queued"}`).
//! - `POST /tracking`: records a tracking event (`{"status": "received"}`);
//!   an event starting "fail" is HTTP 500.
//! - `GET /stats`: requests served per path kind.
//!
//! A response delay (`SandboxOptions::delay_ms`, `--delay-ms MIN[-MAX]` on the
//! command line) models a real vendor: every answer waits a uniform random
//! time in [MIN, MAX] ms first, on top of the special addresses' own waits.
//! `Sandbox::start` has no delay.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a sandbox answers; `Default` is at once, as `Sandbox::start` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SandboxOptions {
    /// Every answer waits a uniform random time in [min, max] milliseconds
    /// (inclusive) before it is computed. (0, 0): no delay.
    pub delay_ms: (u64, u64),
}

impl SandboxOptions {
    /// The longest delay accepted: a minute, far beyond any vendor timeout.
    pub const MAX_DELAY_MS: u64 = 60_000;

    /// Options with a delay of `min..=max` ms, checked as `start_with` does.
    pub fn delay(min: u64, max: u64) -> Result<SandboxOptions, String> {
        let o = SandboxOptions {
            delay_ms: (min, max),
        };
        o.check()?;
        Ok(o)
    }

    fn check(&self) -> Result<(), String> {
        let (min, max) = self.delay_ms;
        if min > max {
            return Err(format!(
                "--delay-ms: the minimum ({min} ms) is greater than the maximum ({max} ms)"
            ));
        }
        if max > Self::MAX_DELAY_MS {
            return Err(format!(
                "--delay-ms: {max} ms is over the maximum of {} ms",
                Self::MAX_DELAY_MS
            ));
        }
        Ok(())
    }
}

/// Parse a delay, `MIN` or `MIN-MAX` in whole milliseconds (`100`,
/// `100-300`). Errors name `--delay-ms`.
pub fn parse_delay(s: &str) -> Result<(u64, u64), String> {
    let bad = || {
        format!(
            "--delay-ms: expected MIN or MIN-MAX in whole milliseconds (e.g. 100 or 100-300), got {s:?}"
        )
    };
    let number = |t: &str| -> Result<u64, String> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // all digits: only a value too large for u64 fails
        t.parse::<u64>().map_err(|_| {
            format!(
                "--delay-ms: {t} ms is over the maximum of {} ms",
                SandboxOptions::MAX_DELAY_MS
            )
        })
    };
    let t = s.trim();
    let (min, max) = match t.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let n = number(t)?;
            (n, n)
        }
    };
    SandboxOptions::delay(min, max).map(|o| o.delay_ms)
}

/// The command line of `iclear-sandbox [ADDR] [--delay-ms MIN[-MAX]]`
/// (`args` without the program name). `env_delay` is the value of
/// `ICLEAR_SANDBOX_DELAY_MS`, if set (empty is unset); `--delay-ms` wins
/// over it. Returns the
/// address (default 127.0.0.1:28817) and the options, or a message for the
/// user.
pub fn parse_args(
    args: &[String],
    env_delay: Option<&str>,
) -> Result<(String, SandboxOptions), String> {
    let mut addr: Option<String> = None;
    let mut delay: Option<(u64, u64)> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--delay-ms=") {
            delay = Some(parse_delay(v)?);
        } else if a == "--delay-ms" {
            let v = it
                .next()
                .ok_or("--delay-ms needs a value: MIN or MIN-MAX in milliseconds")?;
            delay = Some(parse_delay(v)?);
        } else if a.starts_with('-') {
            return Err(format!("unknown option {a:?}"));
        } else if addr.is_none() {
            addr = Some(a.clone());
        } else {
            return Err(format!("unexpected argument {a:?}: one ADDR at most"));
        }
    }
    let env_delay = env_delay.filter(|v| !v.trim().is_empty());
    let delay = match (delay, env_delay) {
        (Some(d), _) => d,
        (None, Some(v)) => {
            parse_delay(v).map_err(|e| format!("ICLEAR_SANDBOX_DELAY_MS={v:?}: {e}"))?
        }
        (None, None) => (0, 0),
    };
    Ok((
        addr.unwrap_or_else(|| "127.0.0.1:28817".into()),
        SandboxOptions { delay_ms: delay },
    ))
}

#[derive(Default)]
struct State {
    counts: Mutex<HashMap<String, u64>>,
    sms: Mutex<Vec<Value>>,
    tracking: Mutex<Vec<Value>>,
    stop: AtomicBool,
    /// Connections accepted (a client that keeps them alive opens few).
    connections: AtomicU64,
    options: SandboxOptions,
    /// The PRNG's state (splitmix64: one atomic add per draw).
    rng: AtomicU64,
}

impl State {
    /// The delay of one answer: uniform in [min, max] ms.
    fn delay(&self) -> Duration {
        let (min, max) = self.options.delay_ms;
        if max == 0 {
            return Duration::ZERO;
        }
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Duration::from_millis(min + z % (max - min + 1))
    }
}

pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Sandbox {
    /// Listen on `addr` (loopback only; port 0 picks a free one). Answers at
    /// once.
    pub fn start(addr: &str) -> std::io::Result<Sandbox> {
        Sandbox::start_with(addr, SandboxOptions::default())
    }

    /// `start` with options: a delay over `SandboxOptions::MAX_DELAY_MS`, or
    /// a minimum over the maximum, is refused (`InvalidInput`).
    pub fn start_with(addr: &str, options: SandboxOptions) -> std::io::Result<Sandbox> {
        options
            .check()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::other(format!(
                "refusing to listen on {addr}: the sandbox is loopback only"
            )));
        }
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let state = Arc::new(State {
            options,
            rng: AtomicU64::new(seed),
            ..State::default()
        });
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    st.connections.fetch_add(1, Ordering::Relaxed);
                    let st = st.clone();
                    thread::spawn(move || {
                        let _ = serve(conn, &st);
                    });
                }
            }
        });
        Ok(Sandbox { addr, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The options it was started with.
    pub fn options(&self) -> SandboxOptions {
        self.state.options
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served for a path kind ("ip", "phone", "iclaim", "sms").
    pub fn count(&self, kind: &str) -> u64 {
        *self.state.counts.lock().unwrap().get(kind).unwrap_or(&0)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// The SMS messages received, oldest first.
    pub fn sms(&self) -> Vec<Value> {
        self.state.sms.lock().unwrap().clone()
    }

    /// The tracking events received, oldest first.
    pub fn tracking(&self) -> Vec<Value> {
        self.state.tracking.lock().unwrap().clone()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
    /// `Connection: close`: answer, then close.
    close: bool,
}

/// The next request on the connection; None when the client closed it.
fn read_request(r: &mut BufReader<&TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut len, mut authorization, mut close) = (0usize, None, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(v.trim().to_string()),
                "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
        close,
    }))
}

/// Serve the connection's requests until the client closes it (or asks to,
/// or is idle for 30 s): keep-alive, as the vendors' HTTPS endpoints do, so
/// that a client that reuses its connections is measured doing so.
fn serve(conn: TcpStream, st: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(&conn);
    let mut out = &conn;
    while let Some(req) = read_request(&mut reader)? {
        // a stopped sandbox answers nothing more, on old connections too
        if st.stop.load(Ordering::Relaxed) {
            break;
        }
        thread::sleep(st.delay());
        let (status, body) = answer(&req, st);
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Internal Server Error",
        };
        let connection = if req.close { "close" } else { "keep-alive" };
        // one write: on a kept connection, pieces written apart wait on
        // the client's delayed ACK (Nagle), 40 ms each
        let reply = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        out.write_all(reply.as_bytes())?;
        out.flush()?;
        if req.close {
            break;
        }
    }
    Ok(())
}

fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

fn answer(req: &Request, st: &State) -> (u16, String) {
    let path = req.path.split('?').next().unwrap_or("");
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let kind = seg.first().copied().unwrap_or("").to_string();
    *st.counts.lock().unwrap().entry(kind.clone()).or_default() += 1;
    match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["ip", key, ip]) => ip_answer(key, &decode(ip)),
        ("GET", ["phone", key, phone]) => phone_answer(key, &decode(phone)),
        ("POST", ["iclaim", session]) => iclaim_answer(req, &decode(session)),
        ("POST", ["sms"]) => {
            let v: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
            st.sms.lock().unwrap().push(v);
            (200, json!({"status": "queued"}).to_string())
        }
        // a tracking webhook: event "fail…" is HTTP 500 (retried), others recorded
        ("POST", ["tracking"]) => {
            let v: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
            if v["event"].as_str().is_some_and(|e| e.starts_with("fail")) {
                return (500, json!({"status": "error"}).to_string());
            }
            st.tracking.lock().unwrap().push(v);
            (200, json!({"status": "received"}).to_string())
        }
        ("GET", ["stats"]) => (200, json!(*st.counts.lock().unwrap()).to_string()),
        _ => (404, json!({"message": "no such sandbox path"}).to_string()),
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn failed(message: &str) -> (u16, String) {
    (
        200,
        json!({"success": false, "message": message, "request_id": "sandbox"}).to_string(),
    )
}

/// The vendors' documented payloads (`src/services/fixtures/README.md` gives
/// the source of each), served verbatim for the keys and sessions that ask.
mod fixtures {
    pub const IP_SUCCESS: &str = include_str!("fixtures/ipqs_ip_success_openapi_example.json");
    pub const IP_INVALID_KEY: &str = include_str!("fixtures/ipqs_ip_error_invalid_key.json");
    pub const PHONE_SUCCESS: &str =
        include_str!("fixtures/ipqs_phone_success_tollfree_openapi_example.json");
    pub const TF_SUCCESS: &str =
        include_str!("fixtures/trustedform_v4_success_2023_original_capture.json");
    pub const TF_FAILURE_SCAN: &str =
        include_str!("fixtures/trustedform_v4_failure_page_scan.json");
    pub const TF_404: &str =
        include_str!("fixtures/trustedform_v4_error_404_not_found_or_expired.json");
    pub const TF_401: &str = include_str!("fixtures/trustedform_v4_error_401_unauthorized.json");
    pub const TF_COMPOSITE: &str =
        include_str!("fixtures/trustedform_v4_docs_example_composite.json");
    pub const TF_FAILURE_VERIFY: &str =
        include_str!("fixtures/trustedform_v4_failure_verify_consent_language.json");
    pub const PHONE_REAL: &str = include_str!("fixtures/ipqs_phone_success.json");
}

fn ip_answer(key: &str, ip: &str) -> (u16, String) {
    if key == "invalid" {
        return (200, fixtures::IP_INVALID_KEY.to_string());
    }
    if key == "fixture" {
        return (200, fixtures::IP_SUCCESS.to_string());
    }
    let Ok(addr) = ip.parse::<std::net::Ipv4Addr>() else {
        return failed("Invalid IP address.");
    };
    let [a, b, c, d] = addr.octets();
    match (a, b, c, d) {
        (192, 0, 2, 1) => sleep_ms(10_000),
        (192, 0, 2, 2) => return failed("Temporary lookup failure."),
        (192, 0, 2, 3) => return (500, "{}".into()),
        (192, 0, 2, 4) => return (200, "<html>upstream error</html>".into()),
        (198, 51, 100, n) => sleep_ms(u64::from(n) * 10),
        _ => {}
    }
    let score = u32::from(d) % 101;
    let country = ["US", "US", "US", "CA", "GB", "MX", "DE", "IN"][usize::from(c % 8)];
    let body = json!({
        "success": true, "message": "Success.", "fraud_score": score,
        "country_code": country, "region": "Sandbox", "city": "Loopback",
        "ISP": format!("Sandbox ISP {a}"), "ASN": 64500 + u32::from(a),
        "mobile": b % 2 == 1, "proxy": score >= 75, "vpn": score >= 85, "tor": score >= 95,
        "recent_abuse": score >= 90, "bot_status": false,
        "request_id": format!("sbx-ip-{a}-{b}-{c}-{d}"),
    });
    (200, body.to_string())
}

fn phone_answer(key: &str, phone: &str) -> (u16, String) {
    if key == "invalid" {
        return (200, fixtures::IP_INVALID_KEY.to_string());
    }
    if key == "fixture" {
        return (200, fixtures::PHONE_SUCCESS.to_string());
    }
    if key == "fixture-real" {
        return (200, fixtures::PHONE_REAL.to_string());
    }
    let digits: Vec<u8> = phone
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    if digits.len() < 7 {
        return failed("Invalid phone number.");
    }
    let last = |n: usize| digits[digits.len() - n];
    if digits.ends_with(&[0, 0, 0, 0]) {
        sleep_ms(10_000);
    } else if digits.ends_with(&[0, 0, 0, 1]) {
        return failed("Temporary lookup failure.");
    } else if digits.ends_with(&[0, 0, 0, 2]) {
        return (500, "{}".into());
    }
    let score = u32::from(last(2)) * 10 + u32::from(last(1));
    let line_type = [
        "Landline",
        "Mobile",
        "VOIP",
        "Toll Free",
        "Satellite",
        "Premium Rate",
        "Pager",
        "Mobile",
        "Mobile",
        "Landline",
    ][usize::from(last(5))];
    let carrier = [
        "Verizon",
        "AT&T",
        "T-Mobile",
        "Bandwidth",
        "Sprint",
        "US Cellular",
        "Google Voice",
        "Twilio",
        "Lumen",
        "Frontier",
    ][usize::from(last(6))];
    let tz = [
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Los_Angeles",
        "America/Anchorage",
        "Pacific/Honolulu",
        "America/Phoenix",
        "America/New_York",
        "America/Chicago",
        "America/Los_Angeles",
    ][usize::from(last(7))];
    let country = if digits.starts_with(&[4, 4]) {
        "GB"
    } else {
        "US"
    };
    let body = json!({
        "success": true, "message": "Phone is valid.", "formatted": phone,
        "valid": digits.len() >= 10, "active": last(3) != 9, "fraud_score": score,
        "recent_abuse": score >= 85, "VOIP": line_type == "VOIP", "prepaid": last(4) == 1,
        "risky": score >= 75, "spammer": score >= 90, "line_type": line_type,
        "carrier": carrier, "country": country, "timezone": tz,
        "request_id": format!("sbx-phone-{}", digits.iter().map(|d| d.to_string()).collect::<String>()),
    });
    // the compliance flags IPQS documents (as in fixtures/ipqs_phone_success.json):
    // a number ending 09N1..09N5 (N any digit) holds one, by its last digit
    let mut body = body;
    let flagged = |k: u8| last(4) == 0 && last(3) == 9 && last(1) == k;
    body["do_not_call"] = flagged(1).into();
    body["tcpa_blacklist"] = flagged(2).into();
    body["leaked"] = flagged(3).into();
    body["sms_pumping"] = flagged(4).into();
    body["number_recycling"] = json!({"recently_recycled": flagged(5), "ported": false});
    (200, body.to_string())
}

fn iclaim_answer(req: &Request, session: &str) -> (u16, String) {
    if !req
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic ") && a.len() > 6)
    {
        return (401, json!({"message": "unauthorized"}).to_string());
    }
    let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
    let reference = body.pointer("/retain/reference").cloned();
    // the vendor's documented payloads (src/services/fixtures), verbatim
    if let Some(fixture) = session.strip_prefix("fixture-") {
        let body = |b: &str| b.to_string();
        return match fixture.split('-').next().unwrap_or("") {
            "success" => (200, body(fixtures::TF_SUCCESS)),
            "composite" => (200, body(fixtures::TF_COMPOSITE)),
            "verify" => (200, body(fixtures::TF_FAILURE_VERIFY)),
            "scan" => (200, body(fixtures::TF_FAILURE_SCAN)),
            "expired" => (404, body(fixtures::TF_404)),
            "unauthorized" => (401, body(fixtures::TF_401)),
            // the other documented errors: fixture-<status>
            code => {
                let status = code.parse().unwrap_or(500);
                let reason = match status {
                    400 => "Invalid certificate id",
                    402 => "Account inactive",
                    403 => "Product unavailable",
                    405 => "Certificate cannot be claimed",
                    410 => "TrustedForm certificate has expired",
                    422 => "Certificate has been claimed too many times",
                    _ => "Internal error",
                };
                (
                    status,
                    json!({"outcome": "error", "reason": reason}).to_string(),
                )
            }
        };
    }
    if session.starts_with("fail") {
        return (
            200,
            json!({"outcome": "failure", "reason": "certificate not found or expired"}).to_string(),
        );
    }
    if session.starts_with("err") {
        return (
            500,
            json!({"outcome": "error", "reason": "internal error"}).to_string(),
        );
    }
    if session.starts_with("slow") {
        sleep_ms(10_000);
    }
    let mut answer = json!({
        "outcome": "success", "reason": null,
        "retain": {"reference": reference, "results": {"expires_at": "2031-11-21T00:00:00Z"}},
        "match_lead": {"result": {"success": body.pointer("/match_lead/email").is_some_and(|e| !e.is_null())}},
        "cert": {"cert_id": session},
    });
    insights_and_verify(&body, session, &mut answer);
    (200, answer.to_string())
}

/// What a certificate shows, by its session id's first word: `bot` (a bot
/// filled it), `old` (a day old), `fast` (3 s on the page), `paste` (pasted,
/// not typed), `elsewhere` (on another domain), `noconsent` (consent
/// language not approved); anything else a clean one on example.com. The
/// page reads "Get rates for your home security system. By clicking ...
/// I consent to be contacted by Acme Inc." for the scans.
fn insights_and_verify(req: &Value, session: &str, answer: &mut Value) {
    const PAGE: &str = "get rates for your home security system. by clicking on the 'get rates' \
                        button below, i consent to be contacted by acme inc.";
    let kind = session.split(['-', '_']).next().unwrap_or("");
    let composite: Value = serde_json::from_str(fixtures::TF_COMPOSITE).unwrap_or(Value::Null);
    if let Some(asked) = req
        .pointer("/insights/properties")
        .and_then(Value::as_array)
    {
        let mut all = composite
            .pointer("/insights/properties")
            .cloned()
            .unwrap_or_else(|| json!({}));
        all["age_seconds"] = json!(if kind == "old" { 86_400 } else { 120 });
        all["bot_detected"] = json!(kind == "bot");
        all["seconds_on_page"] = json!(if kind == "fast" { 3 } else { 95 });
        all["form_input_method"] = json!(if kind == "paste" {
            vec!["paste"]
        } else {
            vec!["typing"]
        });
        all["domain"] = json!(if kind == "elsewhere" {
            "lead-farm.example"
        } else {
            "example.com"
        });
        // only what was asked for, as the vendor answers
        let props: serde_json::Map<String, Value> = asked
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|p| all.get(p).map(|v| (p.to_string(), v.clone())))
            .collect();
        answer["insights"]["properties"] = Value::Object(props);
    }
    if let Some(scans) = req.pointer("/insights/scans") {
        let phrases = |k: &str| -> Vec<String> {
            scans
                .get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (required, forbidden) = (phrases("required"), phrases("forbidden"));
        let on_page = |p: &String| PAGE.contains(&p.to_lowercase());
        let split = |list: &[String]| -> (Vec<String>, Vec<String>) {
            list.iter().cloned().partition(|p| on_page(p))
        };
        let (req_found, req_missing) = split(&required);
        let (forb_found, forb_missing) = split(&forbidden);
        let success = req_missing.is_empty() && forb_found.is_empty();
        answer["insights"]["scans"] = json!({
            "required": required, "forbidden": forbidden,
            "result": {"required": {"found": req_found, "not_found": req_missing},
                       "forbidden": {"found": forb_found, "not_found": forb_missing},
                       "success": success}});
        if !success {
            answer["outcome"] = "failure".into();
            answer["reason"] = "Insights page scans unsuccessful".into();
        }
    }
    if let Some(verify) = req.get("verify") {
        let approved = kind != "noconsent";
        let seller = verify
            .get("advertiser_name")
            .and_then(Value::as_str)
            .is_none_or(|a| PAGE.contains(&a.to_lowercase()));
        let success = approved && seller;
        answer["verify"] = json!({
            "languages": [{"text": "By clicking on the 'Get Rates' button below, I consent to be contacted by Acme Inc."}],
            "result": {"language_approved": approved, "one_to_one": seller, "form_submitted": true,
                       "min_font_size_px_satisfied": true, "min_contrast_ratio_satisfied": true,
                       "opt_in_types_satisfied": true, "success": success}});
        if !success {
            answer["outcome"] = "failure".into();
            answer["reason"] = "Consent language not detected in the certificate.".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// One request over a fresh connection, closed after the answer (read
    /// to its end); the body of the answer.
    fn get(sb: &Sandbox, path: &str) -> String {
        let mut c = TcpStream::connect(sb.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        out.split("\r\n\r\n").nth(1).unwrap().to_string()
    }

    // Lower bounds only: a loaded machine may answer later, never sooner.
    #[test]
    fn a_delay_holds_every_answer_back() {
        let sb =
            Sandbox::start_with("127.0.0.1:0", SandboxOptions::delay(150, 150).unwrap()).unwrap();
        assert_eq!(sb.options().delay_ms, (150, 150));
        let t = Instant::now();
        let body = get(&sb, "/ip/key/10.1.3.77");
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        assert!(body.contains("\"fraud_score\":77"), "{body}");
        // a range: each answer waits at least its minimum
        let sb =
            Sandbox::start_with("127.0.0.1:0", SandboxOptions::delay(150, 200).unwrap()).unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            get(&sb, "/phone/key/5552321995");
            assert!(
                t.elapsed() >= Duration::from_millis(150),
                "{:?}",
                t.elapsed()
            );
        }
        // the special addresses' waits add to it: 198.51.100.5 is 50 ms more
        let t = Instant::now();
        get(&sb, "/ip/key/198.51.100.5");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(sb.count("ip"), 1);
    }

    #[test]
    fn delays_are_drawn_across_the_whole_range() {
        let st = State {
            options: SandboxOptions::delay(100, 103).unwrap(),
            rng: AtomicU64::new(7),
            ..State::default()
        };
        let mut seen = [0u32; 4];
        for _ in 0..1000 {
            let ms = st.delay().as_millis() as usize;
            assert!((100..=103).contains(&ms), "{ms}");
            seen[ms - 100] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        assert_eq!(State::default().delay(), Duration::ZERO);
    }

    #[test]
    fn no_delay_by_default_and_bad_delays_refused() {
        assert_eq!(
            Sandbox::start("127.0.0.1:0").unwrap().options().delay_ms,
            (0, 0)
        );
        for bad in [(0, 60_001), (300, 100)] {
            let e = Sandbox::start_with("127.0.0.1:0", SandboxOptions { delay_ms: bad })
                .err()
                .unwrap();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("--delay-ms"), "{e}");
        }
    }

    #[test]
    fn delay_option_forms() {
        assert_eq!(parse_delay("100"), Ok((100, 100)));
        assert_eq!(parse_delay("100-300"), Ok((100, 300)));
        assert_eq!(parse_delay(" 0 "), Ok((0, 0)));
        assert_eq!(parse_delay("60000"), Ok((60_000, 60_000)));
        assert_eq!(parse_delay("5-5"), Ok((5, 5)));
        for bad in [
            "",
            "-",
            "abc",
            "100-",
            "-100",
            "+100",
            "1.5",
            "100ms",
            "100-300-400",
            "100 - 300",
            "0x10",
            "300-100",
            "60001",
            "0-60001",
            "99999999999999999999999",
        ] {
            let e = parse_delay(bad).unwrap_err();
            assert!(e.starts_with("--delay-ms"), "{bad:?}: {e}");
        }
        assert!(parse_delay("70000").unwrap_err().contains("60000"));

        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parse = |v: &[&str], env| parse_args(&args(v), env);
        let opts = |min, max| SandboxOptions {
            delay_ms: (min, max),
        };
        assert_eq!(
            parse(&[], None),
            Ok(("127.0.0.1:28817".to_string(), opts(0, 0)))
        );
        assert_eq!(
            parse(&["127.0.0.1:9", "--delay-ms", "100-300"], None),
            Ok(("127.0.0.1:9".to_string(), opts(100, 300)))
        );
        assert_eq!(
            parse(&["--delay-ms=100", "127.0.0.1:9"], None),
            Ok(("127.0.0.1:9".to_string(), opts(100, 100)))
        );
        // the environment, and the command line over it
        assert_eq!(parse(&[], Some("20-40")).unwrap().1, opts(20, 40));
        assert_eq!(parse(&[], Some("")).unwrap().1, opts(0, 0));
        assert_eq!(
            parse(&["--delay-ms", "7"], Some("20-40")).unwrap().1,
            opts(7, 7)
        );
        let e = parse(&[], Some("fast")).unwrap_err();
        assert!(
            e.contains("ICLEAR_SANDBOX_DELAY_MS") && e.contains("--delay-ms"),
            "{e}"
        );
        for bad in [
            &["--delay-ms"][..],
            &["--delay-ms", "x"],
            &["--delay-ms=", "127.0.0.1:9"],
            &["--delay-ms", "100-70000"],
            &["--delay", "100"],
            &["127.0.0.1:9", "127.0.0.1:10"],
        ] {
            assert!(parse(bad, None).is_err(), "{bad:?}");
        }
        assert!(parse(&["--delay-ms", "x"], None)
            .unwrap_err()
            .contains("--delay-ms"));
    }
}
