//! The device filter of the status page (seed 003, "The Device Status Update Page"), as pure
//! functions shared by the web UI, the REST API and the CLI.
//!
//! * The filter string is split at white space into terms; a device is shown only when
//!   **every** term matches.
//! * A term matches when it occurs as a **complete word** in one of the device's fields (IP
//!   address, serial number, type, name, phase, classes, environments, firmware, boot code;
//!   also vendor, model and proxy for the other vendors): like a regular expression
//!   `\bterm\b`, so `16` matches `172.16.0.5` but not `IP1600`, and `172.16.` matches
//!   `172.16.3.9`.
//! * Matching is case-insensitive.
//! * The keywords `present` and `missing` match devices by their missing flag (the
//!   `status.missing` age).

use crate::state::DeviceState;

/// Whether `c` is a word character (as `\w` in PCRE: letters, digits, underscore).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `term` occurs in `text` as a complete word (`\bterm\b`), ignoring case.
pub fn word_match(text: &str, term: &str) -> bool {
    word_match_lower(&text.to_lowercase(), &term.to_lowercase())
}

/// [`word_match`] for already lower-cased text and term.
pub(crate) fn word_match_lower(text: &str, term: &str) -> bool {
    let Some(w) = WordTerm::new(term) else {
        return true;
    };
    text.match_indices(term).any(|(i, _)| w.bounded_at(text, i))
}

/// A non-empty filter term with its word-boundary facts, for checking occurrences found by
/// other means (the inventory index searches many devices' fields at once).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WordTerm<'a> {
    term: &'a str,
    first_word: bool,
    last_word: bool,
}

impl<'a> WordTerm<'a> {
    /// `None` for the empty term (which matches everything).
    pub(crate) fn new(term: &'a str) -> Option<WordTerm<'a>> {
        let (first, last) = (term.chars().next()?, term.chars().next_back()?);
        Some(WordTerm {
            term,
            first_word: is_word(first),
            last_word: is_word(last),
        })
    }

    /// Whether the occurrence of the term at byte `i` of `text` (a char boundary) is a
    /// complete word: `\b` holds before and after it.
    pub(crate) fn bounded_at(&self, text: &str, i: usize) -> bool {
        let before = text[..i].chars().next_back().is_some_and(is_word);
        let after = text[i + self.term.len()..]
            .chars()
            .next()
            .is_some_and(is_word);
        before != self.first_word && after != self.last_word
    }
}

/// Whether a device with the searchable `fields` and the `missing` flag passes `filter`.
pub fn matches<S: AsRef<str>>(filter: &str, fields: &[S], missing: bool) -> bool {
    let terms: Vec<String> = filter.split_whitespace().map(str::to_lowercase).collect();
    if terms.is_empty() {
        return true;
    }
    let lowered: Vec<String> = fields.iter().map(|f| f.as_ref().to_lowercase()).collect();
    terms.iter().all(|term| {
        if term == "missing" && missing || term == "present" && !missing {
            return true;
        }
        lowered.iter().any(|f| word_match_lower(f, term))
    })
}

/// The fields of a stored device the filter looks at.
pub fn device_fields(d: &DeviceState) -> Vec<&str> {
    let mut out = vec![d.sn.as_str()];
    let opts = [
        &d.device.ip,
        &d.device.realip,
        &d.device.proxy,
        &d.device.device_type,
        &d.device.hwid,
        &d.device.phase,
        &d.phase,
        &d.device.classes,
        &d.device.environments,
        &d.firmware.build,
        &d.bootcode.build,
        &d.vendor,
        &d.model,
    ];
    out.extend(opts.into_iter().filter_map(|o| o.as_deref()));
    out
}

/// Whether device `d` is missing at `now`: not seen for more than `missing_after` seconds
/// (0 = never missing).
pub fn is_missing(d: &DeviceState, now: i64, missing_after: u64) -> bool {
    missing_after > 0 && d.seen < now.saturating_sub(missing_after.min(i64::MAX as u64) as i64)
}

/// [`matches`] for a stored device.
pub fn device_matches(filter: &str, d: &DeviceState, now: i64, missing_after: u64) -> bool {
    matches(filter, &device_fields(d), is_missing(d, now, missing_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(ip: &str, ty: &str) -> DeviceState {
        let mut d = DeviceState {
            sn: "00-90-33-30-00-af".into(),
            ..Default::default()
        };
        d.device.ip = Some(ip.into());
        d.device.device_type = Some(ty.into());
        d.device.hwid = Some(format!("{ty}-30-00-af"));
        d
    }

    #[test]
    fn whole_words_only() {
        assert!(word_match("172.16.0.5", "16"));
        assert!(!word_match("IP1600", "16"));
        assert!(!word_match("160.1.1.1", "16"));
        assert!(word_match("172.16.3.9", "172.16."));
        assert!(!word_match("10.172.160.1", "172.16."));
        assert!(word_match("IP222", "ip222"));
        assert!(!word_match("IP2220", "ip222"));
        assert!(word_match("a b", ""));
    }

    #[test]
    fn seed_example_all_terms_must_match() {
        let a = dev("172.16.4.20", "IP222");
        let b = dev("172.16.4.21", "IP232");
        let c = dev("10.0.0.1", "IP222");
        let f = "172.16. ip222";
        assert!(device_matches(f, &a, 0, 0));
        assert!(!device_matches(f, &b, 0, 0));
        assert!(!device_matches(f, &c, 0, 0));
        assert!(device_matches("", &c, 0, 0));
        assert!(device_matches("IP222   10.0.0.1", &c, 0, 0));
    }

    #[test]
    fn present_and_missing_keywords() {
        let mut d = dev("10.0.0.1", "IP222");
        d.seen = 100;
        assert!(device_matches("missing", &d, 1000, 60));
        assert!(!device_matches("present", &d, 1000, 60));
        assert!(device_matches("PRESENT ip222", &d, 120, 60));
        assert!(!device_matches("missing", &d, 120, 60));
        // missing = 0: never missing
        assert!(device_matches("present", &d, 1_000_000, 0));
    }
}
