//! Free checks before paid lookups, from maintained data rather than
//! hand-written rules: whether a phone number is assigned (Google's
//! libphonenumber metadata, the `phonenumber` crate) and whether an email's
//! domain is a throwaway one (the `mailchecker` crate's list). Pure
//! functions: no Postgres, no I/O.

use std::collections::HashSet;
use std::sync::OnceLock;

/// A valid, assigned phone number by libphonenumber's metadata: a national
/// number is read as a US one, a number with `+` as its own country's.
/// 999-555-0123 (area code 999 is unassigned) and 311-555-0123 (an N11
/// service code) are not.
pub fn valid_phone(s: &str) -> bool {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return false;
    }
    phonenumber::parse(Some(phonenumber::country::Id::US), s)
        .map(|n| phonenumber::is_valid(&n))
        .unwrap_or(false)
}

/// A valid number of the North American Numbering Plan (country code 1):
/// what a `phone` field of a US lead must hold.
pub fn valid_us_phone(s: &str) -> bool {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return false;
    }
    phonenumber::parse(Some(phonenumber::country::Id::US), s)
        .map(|n| n.code().value() == 1 && phonenumber::is_valid(&n))
        .unwrap_or(false)
}

/// The disposable-email domains, as a set (the crate keeps a list).
fn disposable_domains() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| mailchecker::blacklist().into_iter().collect())
}

/// Is the email's domain, or a domain it is under, a disposable-email
/// service's? (`x@mailinator.com`, `x@a.b.33mail.com`.) A value that is not
/// an email is not a disposable one.
pub fn disposable_email(s: &str) -> bool {
    let Some((_, domain)) = s.trim().rsplit_once('@') else {
        return false;
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || domain.len() > 253 {
        return false;
    }
    let set = disposable_domains();
    // the domain and each domain it is under (a.b.c, b.c, c)
    let mut d = domain.as_str();
    loop {
        if set.contains(d) {
            return true;
        }
        match d.split_once('.') {
            Some((_, rest)) if !rest.is_empty() => d = rest,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_checked_against_the_numbering_plan() {
        assert!(valid_phone("(201) 555-0123"));
        assert!(valid_phone("+1 201 555 0123"));
        assert!(valid_phone("2015550123"));
        assert!(valid_phone("+44 20 7946 0958"), "a London number");
        assert!(
            !valid_phone("999-555-0123"),
            "area code 999 is not assigned"
        );
        assert!(!valid_phone("311-555-0123"), "311 is a service code");
        assert!(!valid_phone("123-456-7890"));
        assert!(!valid_phone("555"));
        assert!(!valid_phone(""));
        assert!(!valid_phone(&"9".repeat(100)));
        assert!(valid_us_phone("(201) 555-0123"));
        assert!(!valid_us_phone("+44 20 7946 0958"), "not a US number");
    }

    #[test]
    fn throwaway_domains_are_found_with_their_subdomains() {
        assert!(disposable_email("x@mailinator.com"));
        assert!(disposable_email("X@MAILINATOR.COM "));
        assert!(disposable_email("x@a.b.33mail.com"));
        assert!(!disposable_email("ann@gmail.com"));
        assert!(!disposable_email("not an email"));
        assert!(!disposable_email("x@"));
    }
}
