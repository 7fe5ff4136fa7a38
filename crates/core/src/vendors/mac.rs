//! MAC addresses as phones write them: parsed strictly, stored normalised.
//!
//! Phones put their MAC into file names (`001565aabbcc.cfg`, `snomD785-000413A11FA7.htm`),
//! User-Agent strings (`00:15:65:4a:a9:37`) and query strings, in either case and with or
//! without separators. [`Mac::parse`] accepts exactly those spellings and nothing else: 12 hex
//! digits, optionally split into six pairs by one consistent separator (`:`, `-` or `.`) or
//! into three groups of four by `.` (Cisco style). The canonical form ([`Mac::as_str`]) is
//! lower-case hex without separators; it is the inventory key of every non-innovaphone device.

use std::fmt;

/// A validated, normalised MAC address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(String);

/// Why a string is not a MAC address (the message names the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a MAC address: {reason}")]
pub struct MacError {
    pub input: String,
    pub reason: &'static str,
}

impl Mac {
    /// Parse a MAC in any of the spellings phones use. The all-zero address (Polycom's name for
    /// its common file) and the broadcast address are refused: no phone has them.
    pub fn parse(s: &str) -> Result<Mac, MacError> {
        let err = |reason| MacError {
            input: s.chars().take(64).collect(),
            reason,
        };
        let hex: String = match s.len() {
            12 => s.to_string(),
            17 => {
                let sep = s.as_bytes()[2];
                if !matches!(sep, b':' | b'-' | b'.') {
                    return Err(err("separators must be ':', '-' or '.'"));
                }
                let parts: Vec<&str> = s.split(sep as char).collect();
                if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                    return Err(err("expected six pairs of hex digits"));
                }
                parts.concat()
            }
            14 => {
                let parts: Vec<&str> = s.split('.').collect();
                if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                    return Err(err("expected three groups of four hex digits"));
                }
                parts.concat()
            }
            _ => return Err(err("expected 12 hex digits")),
        };
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("only hex digits 0-9, a-f are allowed"));
        }
        let hex = hex.to_ascii_lowercase();
        if hex == "000000000000" || hex == "ffffffffffff" {
            return Err(err(
                "the all-zero and broadcast addresses are not device addresses",
            ));
        }
        Ok(Mac(hex))
    }

    /// Lower-case hex without separators: `001565aabbcc`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Upper-case hex without separators: `001565AABBCC` (Snom, Gigaset file names).
    pub fn upper(&self) -> String {
        self.0.to_ascii_uppercase()
    }

    /// Lower-case with colons: `00:15:65:aa:bb:cc` (Cisco `$MAC`).
    pub fn colon(&self) -> String {
        let b = self.0.as_bytes();
        b.chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The first three bytes as 6 upper-case hex digits: `001565`.
    pub fn oui(&self) -> String {
        self.0[..6].to_ascii_uppercase()
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for s in [
            "001565aabbcc",
            "001565AABBCC",
            "00:15:65:aa:bb:cc",
            "00-15-65-AA-BB-CC",
            "0015.65aa.bbcc",
            "00.15.65.aa.bb.cc",
        ] {
            assert_eq!(Mac::parse(s).unwrap().as_str(), "001565aabbcc", "{s}");
        }
        let m = Mac::parse("000413A11FA7").unwrap();
        assert_eq!(m.upper(), "000413A11FA7");
        assert_eq!(m.colon(), "00:04:13:a1:1f:a7");
        assert_eq!(m.oui(), "000413");
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "00156",
            "001565aabbc",
            "001565aabbccd",
            "001565aabbzz",
            "00:15:65-aa:bb:cc",
            "0:015:65:aa:bb:cc",
            "000000000000",
            "FFFFFFFFFFFF",
            "{mac}",
        ] {
            assert!(Mac::parse(s).is_err(), "{s}");
        }
        let e = Mac::parse("00156").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'00156' is not a MAC address: expected 12 hex digits"
        );
    }
}
