//! The Email Domain Corrector: fixes typing mistakes in the domain of an email
//! address ("gmial.com", "yahoo.con", "hotmail.co").
//!
//! The algorithm:
//! 1. The domain is lowercased and trimmed. A domain that is on the known list
//!    is valid as written and is never changed. The list includes the real
//!    domains that look like typos of others: gmx.com, mail.com, me.com.
//! 2. Otherwise the candidate is the known domain at the smallest optimal string
//!    alignment distance: insertions, deletions, substitutions, and swaps of
//!    adjacent letters each cost 1.
//! 3. The correction is made only when that distance is within the threshold
//!    (1 for domains of up to 6 characters, 2 for longer ones) and exactly one
//!    known domain is at that distance. A tie is ambiguous and changes nothing.

/// Common consumer mail domains (US lead traffic), including the look-alikes
/// that are real domains in their own right.
pub const KNOWN_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "ymail.com",
    "rocketmail.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "comcast.net",
    "att.net",
    "sbcglobal.net",
    "bellsouth.net",
    "verizon.net",
    "charter.net",
    "cox.net",
    "earthlink.net",
    "optonline.net",
    "frontier.com",
    "windstream.net",
    "juno.com",
    "netzero.net",
    "protonmail.com",
    "proton.me",
    "gmx.com",
    "mail.com",
    "zoho.com",
    "yahoo.co.uk",
    "hotmail.co.uk",
    "aim.com",
    "q.com",
    "centurylink.net",
    "roadrunner.com",
];

/// Optimal string alignment distance (Damerau–Levenshtein without
/// repeated edits of one substring), over bytes.
pub fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The corrected domain, or None when `domain` is valid as written, too far
/// from every known domain, or equally close to two of them.
pub fn correct_domain(domain: &str) -> Option<&'static str> {
    let domain = domain.trim().to_ascii_lowercase();
    if domain.is_empty() || KNOWN_DOMAINS.contains(&domain.as_str()) {
        return None;
    }
    let threshold = if domain.len() <= 6 { 1 } else { 2 };
    // the distance is at least the difference in length: a domain longer
    // than every known one by more than the threshold is none of them (and
    // a hostile 60 KB domain costs nothing; review finding 10)
    let longest = KNOWN_DOMAINS.iter().map(|k| k.len()).max().unwrap_or(0);
    if domain.len() > longest + threshold {
        return None;
    }
    let mut best: Option<(usize, &'static str)> = None;
    let mut tie = false;
    for known in KNOWN_DOMAINS {
        let d = distance(&domain, known);
        match best {
            Some((b, _)) if d > b => {}
            Some((b, _)) if d == b => tie = true,
            _ => {
                best = Some((d, known));
                tie = false;
            }
        }
    }
    match best {
        Some((d, known)) if d <= threshold && !tie => Some(known),
        _ => None,
    }
}

/// The email with its domain corrected, or None when nothing changes (no
/// '@', or the domain needs no correction). The local part is kept as is.
pub fn correct_email(email: &str) -> Option<String> {
    let (local, domain) = email.trim().rsplit_once('@')?;
    correct_domain(domain).map(|d| format!("{local}@{d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_transpositions_once() {
        assert_eq!(distance("gmail.com", "gmail.com"), 0);
        assert_eq!(distance("gmial.com", "gmail.com"), 1);
        assert_eq!(distance("gmail.con", "gmail.com"), 1);
        assert_eq!(distance("gmai.com", "gmail.com"), 1);
        assert_eq!(distance("ggmail.com", "gmail.com"), 1);
        assert_eq!(distance("abc", ""), 3);
    }

    #[test]
    fn a_domain_far_longer_than_any_known_is_not_compared() {
        assert_eq!(correct_domain("hotmail.co.ukk"), Some("hotmail.co.uk"));
        // 64 KB: would allocate 37 tables of 64K x 14 cells before the check
        assert_eq!(correct_domain(&"x".repeat(64 << 10)), None);
    }

    #[test]
    fn corrects_typos() {
        for (typo, fixed) in [
            ("gmial.com", "gmail.com"),
            ("gmail.con", "gmail.com"),
            ("gmal.com", "gmail.com"),
            ("yaho.com", "yahoo.com"),
            ("yahoo.comm", "yahoo.com"),
            ("hotmial.com", "hotmail.com"),
            ("hotmail.co", "hotmail.com"),
            ("outlok.com", "outlook.com"),
            ("icloud.co", "icloud.com"),
            ("comcast.nte", "comcast.net"),
            ("GMAIL.CON", "gmail.com"),
        ] {
            assert_eq!(correct_domain(typo), Some(fixed), "{typo}");
        }
        assert_eq!(
            correct_email(" Jane.Doe@gmial.com ").as_deref(),
            Some("Jane.Doe@gmail.com")
        );
    }

    #[test]
    fn leaves_valid_unknown_and_ambiguous_domains_alone() {
        // valid as written, though one edit from another known domain
        for valid in [
            "gmx.com", "mail.com", "me.com", "live.com", "msn.com", "aim.com",
        ] {
            assert_eq!(correct_domain(valid), None, "{valid}");
        }
        // company domains far from every known domain
        for unknown in [
            "acme-corp.com",
            "example.org",
            "university.edu",
            "phonexa.com",
        ] {
            assert_eq!(correct_domain(unknown), None, "{unknown}");
        }
        // short domains get only one edit: "ao.co" is two from aol.com
        assert_eq!(correct_domain("ao.co"), None);
        assert_eq!(correct_email("no-at-sign"), None);
        assert_eq!(correct_email("a@gmail.com"), None);
    }
}
