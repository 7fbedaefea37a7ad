//! Who a consumer's erasure request names, and where a stored JSON value
//! mentions them (`iclear.forget`, SECURITY.md "Erasure"). It judges values
//! only: finding and rewriting the rows is the store's.

use crate::service::verification_history::normalize_phone;
use serde_json::Value;

/// What replaces a value that names the consumer.
pub const ERASED: &str = "[erased]";

/// The consumer of an erasure request: an email (compared lowercased and
/// trimmed, anywhere in a string) and a phone (compared by
/// `normalize_phone`, as a whole value or as a run of digits in one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    email: Option<String>,
    phone: Option<String>,
}

impl Consumer {
    /// Err names the argument: neither given, an email without `@`, a
    /// phone with fewer than 7 digits (it would match too much).
    pub fn new(email: Option<&str>, phone: Option<&str>) -> Result<Consumer, String> {
        let email = email
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty());
        if let Some(e) = &email {
            if !e.contains('@') || e.len() < 3 {
                return Err(format!("email {e:?} is not an email address"));
            }
        }
        let phone = match phone.map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => match normalize_phone(p) {
                Some(n) if n.len() >= 7 => Some(n),
                _ => return Err(format!("phone {p:?} has fewer than 7 digits")),
            },
            None => None,
        };
        if email.is_none() && phone.is_none() {
            return Err("give an email, a phone or both".into());
        }
        Ok(Consumer { email, phone })
    }

    /// The email, lowercased (a list or cache key is compared to it).
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    /// The phone, normalised.
    pub fn phone(&self) -> Option<&str> {
        self.phone.as_deref()
    }

    /// Does this string name the consumer?
    pub fn names(&self, s: &str) -> bool {
        if let Some(e) = &self.email {
            if s.to_lowercase().contains(e.as_str()) {
                return true;
            }
        }
        let Some(p) = &self.phone else { return false };
        if normalize_phone(s).as_deref() == Some(p.as_str()) {
            return true;
        }
        s.split(|c: char| !c.is_ascii_digit())
            .any(|run| run == p || run.strip_prefix('1') == Some(p.as_str()))
    }

    /// Does `v` name the consumer in any of its strings?
    pub fn mentioned_in(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => self.names(s),
            Value::Array(a) => a.iter().any(|x| self.mentioned_in(x)),
            Value::Object(o) => o.values().any(|x| self.mentioned_in(x)),
            _ => false,
        }
    }

    /// `v` with every string that names the consumer replaced by
    /// `ERASED`, and how many were.
    pub fn erase(&self, v: Value) -> (Value, usize) {
        match v {
            Value::String(s) if self.names(&s) => (Value::String(ERASED.into()), 1),
            Value::Array(a) => {
                let mut n = 0;
                let a = a
                    .into_iter()
                    .map(|x| {
                        let (x, k) = self.erase(x);
                        n += k;
                        x
                    })
                    .collect();
                (Value::Array(a), n)
            }
            Value::Object(o) => {
                let mut n = 0;
                let o = o
                    .into_iter()
                    .map(|(key, x)| {
                        let (x, k) = self.erase(x);
                        n += k;
                        (key, x)
                    })
                    .collect();
                (Value::Object(o), n)
            }
            v => (v, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_consumer_is_found_in_any_form_and_erased() {
        let c = Consumer::new(Some(" Jo@Example.com "), Some("+1 (201) 555-0007")).unwrap();
        assert!(c.names("JO@example.COM"));
        assert!(c.names("https://b.example/t?email=jo@example.com"));
        assert!(c.names("201-555-0007"));
        assert!(c.names("12015550007"));
        assert!(c.names("phone=2015550007&x=1"));
        assert!(!c.names("2015550008"));
        assert!(!c.names("920155500071"));
        let lead = json!({"fields": {"email": "jo@example.com", "homePhone": "(201) 555 0007", "zip": "10001"},
                          "trace": [{"actual": "jo@example.com"}]});
        assert!(c.mentioned_in(&lead));
        let (erased, n) = c.erase(lead);
        assert_eq!(n, 3);
        assert_eq!(erased["fields"]["email"], ERASED);
        assert_eq!(erased["fields"]["zip"], "10001");
        assert!(!c.mentioned_in(&erased));
    }

    #[test]
    fn a_request_names_someone() {
        assert!(Consumer::new(None, None).is_err());
        assert!(Consumer::new(Some("nobody"), None).is_err());
        assert!(Consumer::new(None, Some("123")).is_err());
        assert_eq!(
            Consumer::new(None, Some("1-201-555-0007")).unwrap().phone(),
            Some("2015550007")
        );
    }
}
