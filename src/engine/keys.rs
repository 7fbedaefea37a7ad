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
