//! The few PHP behaviours the reference's wire format depends on.

/// The reference's `_since`: `172801` seconds ago → `2 days`.
pub fn since(now: i64, t: i64) -> String {
    if t == 0 {
        return "&infin;".into();
    }
    let d = now - t;
    let (value, unit) = if d < 120 {
        (d as f64, "sec")
    } else if d < 120 * 60 {
        (round1(d as f64 / 60.0), "min")
    } else if d < 48 * 3600 {
        (round1(d as f64 / 3600.0), "hour")
    } else if d < 90 * 86400 {
        (round1(d as f64 / 86400.0), "day")
    } else {
        (round1(d as f64 / (86400.0 * 7.0)), "week")
    };
    let mut s = String::with_capacity(16);
    push_php_float(&mut s, value);
    s.push(' ');
    s.push_str(unit);
    if value != 1.0 {
        s.push('s');
    }
    s
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A float printed the way PHP interpolates it (`2.0` → `2`, `1.5` → `1.5`).
pub fn php_float(v: f64) -> String {
    let mut s = String::new();
    push_php_float(&mut s, v);
    s
}

/// [`php_float`], appended to `out`.
pub fn push_php_float(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{v}");
    }
}

/// PHP 8 loose inequality (`!=`) between a request value (string or absent) and a value the
/// server computed (string, or the integer 0 for "no fast polling").
pub fn loose_ne(current: Option<&str>, new: &LooseValue) -> bool {
    !loose_eq(current, new)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LooseValue {
    Str(String),
    Int(i64),
    Null,
}

fn numeric(s: &str) -> Option<f64> {
    let t = s.trim_start();
    let t = t.trim_end();
    if t.is_empty() {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn loose_eq(current: Option<&str>, new: &LooseValue) -> bool {
    match (current, new) {
        (None, LooseValue::Null) => true,
        // null == "" / null == 0 / null == "0"? (null converts to "" for strings, false for ints)
        (None, LooseValue::Str(s)) => s.is_empty(),
        (None, LooseValue::Int(i)) => *i == 0,
        (Some(c), LooseValue::Null) => c.is_empty(),
        (Some(c), LooseValue::Int(i)) => match numeric(c) {
            Some(v) => v == *i as f64,
            None => c == i.to_string(),
        },
        (Some(c), LooseValue::Str(s)) => match (numeric(c), numeric(s)) {
            (Some(a), Some(b)) => a == b,
            _ => c == s,
        },
    }
}

/// Bytes as PHP holds them: read a file as ISO-8859-1, one `char` per byte, so that the
/// script text can be handled as a `String` and still go out byte for byte.
pub fn latin1_decode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// [`wire_bytes`] of an owned text: ASCII text (nearly every answer) is its own bytes,
/// handed over without a copy.
pub fn into_wire_bytes(s: String) -> Vec<u8> {
    if s.is_ascii() {
        s.into_bytes()
    } else {
        wire_bytes(&s)
    }
}

/// The bytes of a script on the wire (and under the CHECK md5): characters up to U+00FF as one
/// byte each (undoing [`latin1_decode`]), anything above as UTF-8.
pub fn wire_bytes(s: &str) -> Vec<u8> {
    if s.is_ascii() {
        return s.as_bytes().to_vec(); // the common case, at memcpy speed
    }
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        let v = c as u32;
        if v <= 0xFF {
            out.push(v as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_text_gives_the_same_wire_bytes() {
        for s in ["", "plain\r\n", "é ü", "€ and é", "\u{FF}\u{100}"] {
            assert_eq!(into_wire_bytes(s.to_string()), wire_bytes(s), "{s}");
        }
    }

    #[test]
    fn since_like_php() {
        assert_eq!(since(1000 + 172801, 1000), "2 days");
        assert_eq!(since(1000 + 30, 1000), "30 secs");
        assert_eq!(since(1000 + 1, 1000), "1 sec");
        assert_eq!(since(1000 + 150, 1000), "2.5 mins");
        assert_eq!(since(5, 0), "&infin;");
    }

    #[test]
    fn latin1_round_trip() {
        let raw = [b'a', 0xe4, 0xc3, 0xbc, b'\n'];
        assert_eq!(wire_bytes(&latin1_decode(&raw)), raw);
        assert_eq!(wire_bytes("\u{20ac}"), "\u{20ac}".as_bytes());
        assert_eq!(wire_bytes("config add X\r\n"), b"config add X\r\n");
    }

    #[test]
    fn loose_comparisons() {
        assert!(!loose_ne(None, &LooseValue::Int(0)));
        assert!(loose_ne(None, &LooseValue::Str("5".into())));
        assert!(!loose_ne(Some("5"), &LooseValue::Str("5".into())));
        assert!(!loose_ne(Some("0"), &LooseValue::Int(0)));
        assert!(loose_ne(Some("5"), &LooseValue::Int(0)));
        assert!(loose_ne(Some(""), &LooseValue::Int(0)));
        assert!(loose_ne(Some("staging"), &LooseValue::Str("update".into())));
    }
}
