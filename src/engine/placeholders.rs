//! Placeholders in action values and counter keys: `{%productField_<name>%}`,
//! `{%tPar_<key>%}`, `{%leadId%}`, `{%productId%}`, `{%publisherId%}`,
//! `{%channelId%}`, `{%sourceId%}`, `{%date%}`.

use crate::envelope::value_text;
use serde_json::{Map, Value};

/// What placeholders read. An absent value renders as "".
pub struct Vars<'a> {
    pub fields: &'a Map<String, Value>,
    pub params: &'a Map<String, Value>,
    pub lead_id: &'a str,
    pub product_id: i64,
    pub publisher_id: Option<i64>,
    pub channel_id: Option<i64>,
    pub source_id: Option<i64>,
    /// Today as YYYY-MM-DD (UTC).
    pub date: &'a str,
}

enum Token<'t> {
    Text(&'t str),
    Var(&'t str),
}

fn tokens(t: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(start) = rest.find("{%") {
        if start > 0 {
            out.push(Token::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("%}")
            .ok_or_else(|| format!("unclosed placeholder in {t:?}"))?;
        out.push(Token::Var(&after[..end]));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Token::Text(rest));
    }
    Ok(out)
}

fn known(name: &str) -> bool {
    matches!(
        name,
        "leadId" | "productId" | "publisherId" | "channelId" | "sourceId" | "date"
    ) || name
        .strip_prefix("productField_")
        .or_else(|| name.strip_prefix("tPar_"))
        .is_some_and(|k| !k.is_empty())
}

/// Render every string of a JSON value (a tracking payload): its strings
/// are templates; keys and other values are kept as they are.
pub fn render_json(j: &Value, v: &Vars) -> Value {
    match j {
        Value::String(t) => Value::String(render(t, v)),
        Value::Array(a) => Value::Array(a.iter().map(|x| render_json(x, v)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), render_json(x, v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Refuse a JSON value any of whose strings is a bad template, naming the
/// path of the first (`setting.key[2]`).
pub fn check_json(setting: &str, j: &Value) -> Result<(), (String, String)> {
    match j {
        Value::String(t) => check_template(t).map_err(|e| (setting.to_string(), e)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_json(&format!("{setting}[{i}]"), x)),
        Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check_json(&format!("{setting}.{k}"), x)),
        _ => Ok(()),
    }
}

/// Refuse templates with unknown or unclosed placeholders at configuration time.
pub fn check_template(t: &str) -> Result<(), String> {
    for tok in tokens(t)? {
        if let Token::Var(v) = tok {
            if !known(v) {
                return Err(format!(
                    "unknown placeholder {{%{v}%}} (expected productField_<name>, tPar_<key>, leadId, productId, publisherId, channelId, sourceId or date)"
                ));
            }
        }
    }
    Ok(())
}

/// Is this template a URL? Its placeholders' values are then
/// percent-encoded, so a value cannot add parameters or a fragment to it.
fn is_url(t: &str) -> bool {
    let head = t.get(..8).unwrap_or(t).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://")
}

/// Percent-encode a value for a URL (RFC 3986 unreserved characters kept).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Cut `s` just past `limit` bytes (at a character boundary), so that a
/// value over the limit stays over it without growing further.
fn cut_past(s: &mut String, limit: usize) {
    if s.len() > limit + 1 {
        let mut at = limit + 1;
        while !s.is_char_boundary(at) {
            at += 1;
        }
        s.truncate(at);
    }
}

/// Render a (validated) template. The result is bounded: past
/// `limits::VALUE_BYTES` it is cut just beyond the limit, and the lead that
/// holds it is decided `error` (the pipeline's bound check), so no template
/// can make a value of unbounded size from a lead's data.
pub fn render(t: &str, v: &Vars) -> String {
    render_with(t, v, |s| s.to_string())
}

/// `render`, each placeholder's value passed through `value` first (a
/// regex replacement escapes `$` in them, so a lead's data is never read
/// as a capture group).
pub fn render_with(t: &str, v: &Vars, value: impl Fn(&str) -> String) -> String {
    if !t.contains("{%") {
        return t.to_string();
    }
    let Ok(toks) = tokens(t) else {
        return t.to_string();
    };
    let limit = crate::envelope::limits::VALUE_BYTES;
    let url = is_url(t);
    let mut s = String::with_capacity(t.len() + 16);
    let id = |x: Option<i64>| x.map(|n| n.to_string()).unwrap_or_default();
    for tok in toks {
        if s.len() > limit {
            cut_past(&mut s, limit);
            break;
        }
        match tok {
            Token::Text(x) => s.push_str(x),
            Token::Var(name) => {
                let found = match name {
                    "leadId" => v.lead_id.to_string(),
                    "productId" => v.product_id.to_string(),
                    "publisherId" => id(v.publisher_id),
                    "channelId" => id(v.channel_id),
                    "sourceId" => id(v.source_id),
                    "date" => v.date.to_string(),
                    _ => {
                        if let Some(f) = name.strip_prefix("productField_") {
                            v.fields.get(f).and_then(value_text).unwrap_or_default()
                        } else if let Some(k) = name.strip_prefix("tPar_") {
                            v.params.get(k).and_then(value_text).unwrap_or_default()
                        } else {
                            String::new()
                        }
                    }
                };
                let rendered = value(&found);
                if url {
                    s.push_str(&url_encode(&rendered))
                } else {
                    s.push_str(&rendered)
                }
            }
        }
    }
    cut_past(&mut s, limit);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_every_placeholder() {
        let fields = json!({"email": "a@b.com", "age": 30})
            .as_object()
            .unwrap()
            .clone();
        let params = json!({"sub1": "x"}).as_object().unwrap().clone();
        let v = Vars {
            fields: &fields,
            params: &params,
            lead_id: "L1",
            product_id: 7,
            publisher_id: Some(12),
            channel_id: None,
            source_id: Some(77),
            date: "2026-11-21",
        };
        assert_eq!(
            render(
                "{%productField_email%}|{%productField_age%}|{%tPar_sub1%}|{%leadId%}|{%productId%}|{%publisherId%}|{%channelId%}|{%sourceId%}|{%date%}|{%productField_none%}",
                &v
            ),
            "a@b.com|30|x|L1|7|12||77|2026-11-21|"
        );
        assert_eq!(render("plain", &v), "plain");
    }

    #[test]
    fn urls_get_their_values_encoded_and_values_stay_bounded() {
        let fields = json!({"email": "a@b.com&pub=999&admin=1#frag", "big": "x".repeat(40_000)})
            .as_object()
            .unwrap()
            .clone();
        let params = Map::new();
        let v = Vars {
            fields: &fields,
            params: &params,
            lead_id: "L1",
            product_id: 7,
            publisher_id: Some(16),
            channel_id: None,
            source_id: None,
            date: "2026-12-07",
        };
        assert_eq!(
            render(
                "https://buyer.example/thanks?email={%productField_email%}&pub={%publisherId%}",
                &v
            ),
            "https://buyer.example/thanks?email=a%40b.com%26pub%3D999%26admin%3D1%23frag&pub=16"
        );
        assert_eq!(
            render("{%productField_email%}", &v),
            "a@b.com&pub=999&admin=1#frag"
        );
        let limit = crate::envelope::limits::VALUE_BYTES;
        let many = "{%productField_big%}".repeat(40);
        let out = render(&many, &v);
        assert!(out.len() > limit && out.len() <= limit + 4, "{}", out.len());
    }

    #[test]
    fn check_refuses_unknown_and_unclosed() {
        assert!(check_template("{%productField_email%}-{%date%}").is_ok());
        assert!(check_template("{%email%}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(check_template("{%leadId").unwrap_err().contains("unclosed"));
        assert!(check_template("{%productField_%}").is_err());
    }
}
