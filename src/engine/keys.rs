//! How values are kept as keys (list values, counter keys, lookup-cache
//! keys): normalised, and digested past a length. It depends on nothing
//! else of the engine, so every module may use it.

/// List values are compared trimmed (of the ASCII whitespace that SQL's
/// trigger strips too: space, tab, newlines, form feed, vertical tab) and
/// lowercased, and kept as a `stored_key` (the store normalises
/// `list_entry.value` the same way on insert).
pub fn normalize_list_value(s: &str) -> String {
    stored_key(
        s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C'))
            .to_lowercase(),
    )
}

/// The longest key stored as it is: list values, counter keys and lookup
/// cache keys. A longer one is stored as `sha256:` and its hex digest, so no
/// key meets btree's row-size limit (review finding 10); list_entry's
/// trigger does the same in SQL.
pub const STORED_KEY_BYTES: usize = 512;

pub fn stored_key(s: String) -> String {
    if s.len() <= STORED_KEY_BYTES {
        return s;
    }
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex(&Sha256::digest(s.as_bytes())))
}

/// Bytes as lowercase hexadecimal (digests of keys and signatures).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Phone numbers are matched by their digits; an 11-digit number with the
/// North American country code 1 is the same as its 10 digits.
/// `+1 (555) 010-0199`, `15550100199` and `555.010.0199` are one phone.
pub fn normalize_phone(s: &str) -> Option<String> {
    let d: String = s.chars().filter(char::is_ascii_digit).collect();
    let d = match d.strip_prefix('1') {
        Some(rest) if d.len() == 11 => rest.to_string(),
        _ => d,
    };
    (!d.is_empty()).then_some(d)
}

/// Does a field hold a phone number (its name holds "phone", any case)? A
/// list on such a field, and the history, compare phones by their digits.
pub fn is_phone_field(field: &str) -> bool {
    field.to_ascii_lowercase().contains("phone")
}

/// A list value as the list of `field` keeps it: a phone list by the
/// phone's digits (`normalize_phone`: `(201) 555-0007`, `+1 201 555 0007`
/// and `2015550007` are one number), any other trimmed and lowercased
/// (`normalize_list_value`); as `iclear.list_entry_normalize` stores it.
pub fn normalize_list_value_of(field: &str, s: &str) -> String {
    normalize_list_value_as(is_phone_field(field), s)
}

/// `normalize_list_value_of` for a list known to be on a phone field, or not.
pub fn normalize_list_value_as(phone: bool, s: &str) -> String {
    if phone {
        if let Some(d) = normalize_phone(s) {
            return stored_key(d);
        }
    }
    normalize_list_value(s)
}
