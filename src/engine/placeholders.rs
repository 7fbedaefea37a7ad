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

/// Render a (validated) template.
pub fn render(t: &str, v: &Vars) -> String {
    if !t.contains("{%") {
        return t.to_string();
    }
    let Ok(toks) = tokens(t) else {
        return t.to_string();
    };
    let mut s = String::with_capacity(t.len() + 16);
    let id = |x: Option<i64>| x.map(|n| n.to_string()).unwrap_or_default();
    for tok in toks {
        match tok {
            Token::Text(x) => s.push_str(x),
            Token::Var(name) => s.push_str(&match name {
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
            }),
        }
    }
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
    fn check_refuses_unknown_and_unclosed() {
        assert!(check_template("{%productField_email%}-{%date%}").is_ok());
        assert!(check_template("{%email%}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(check_template("{%leadId").unwrap_err().contains("unclosed"));
        assert!(check_template("{%productField_%}").is_err());
    }
}
