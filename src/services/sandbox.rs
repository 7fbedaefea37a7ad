//! The sandbox provider: a small HTTP/1.1 server on loopback that answers the
//! vendors' protocols deterministically from the request, so the demo and the
//! tests run the real HTTP path with no internet (design §5). It refuses to
//! listen on anything but a loopback address.
//!
//! Answers (README "Sandbox provider" lists them for users):
//! - `GET /ip/{key}/{a.b.c.d}`: fraud_score = d mod 101, country_code by c mod 8
//!   (US, US, US, CA, GB, MX, DE, IN), mobile when b is odd, proxy from 75,
//!   vpn from 85, tor from 95, recent_abuse from 90. Key "invalid" or a
//!   non-IPv4 value: `success: false`. 192.0.2.1 never answers in time
//!   (10 s), 192.0.2.2 is `success: false`, 192.0.2.3 is HTTP 500;
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
//! - `POST /sms`: accepts any JSON message (`{"status": "queued"}`).
//! - `GET /stats`: requests served per path kind.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct State {
    counts: Mutex<HashMap<String, u64>>,
    sms: Mutex<Vec<Value>>,
    stop: AtomicBool,
}

pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Sandbox {
    /// Listen on `addr` (loopback only; port 0 picks a free one).
    pub fn start(addr: &str) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::other(format!(
                "refusing to listen on {addr}: the sandbox is loopback only"
            )));
        }
        let state = Arc::new(State::default());
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
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

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served for a path kind ("ip", "phone", "iclaim", "sms").
    pub fn count(&self, kind: &str) -> u64 {
        *self.state.counts.lock().unwrap().get(kind).unwrap_or(&0)
    }

    /// The SMS messages received, oldest first.
    pub fn sms(&self) -> Vec<Value> {
        self.state.sms.lock().unwrap().clone()
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
}

fn read_request(conn: &TcpStream) -> std::io::Result<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut len, mut authorization) = (0usize, None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn serve(mut conn: TcpStream, st: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = read_request(&conn)?;
    let (status, body) = answer(&req, st);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
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

fn ip_answer(key: &str, ip: &str) -> (u16, String) {
    if key == "invalid" {
        return failed("Invalid or unauthorized key. Please check the API key and try again.");
    }
    let Ok(addr) = ip.parse::<std::net::Ipv4Addr>() else {
        return failed("Invalid IP address.");
    };
    let [a, b, c, d] = addr.octets();
    match (a, b, c, d) {
        (192, 0, 2, 1) => sleep_ms(10_000),
        (192, 0, 2, 2) => return failed("Temporary lookup failure."),
        (192, 0, 2, 3) => return (500, "{}".into()),
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
        return failed("Invalid or unauthorized key. Please check the API key and try again.");
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
    let answer = json!({
        "outcome": "success", "reason": null,
        "retain": {"reference": reference, "results": {"expires_at": "2031-11-21T00:00:00Z"}},
        "match_lead": {"result": {"success": body.pointer("/match_lead/email").is_some_and(|e| !e.is_null())}},
        "cert": {"cert_id": session},
    });
    (200, answer.to_string())
}
