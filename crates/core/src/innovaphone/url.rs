//! PHP-compatible URL encoding and the reference's URL rewrite pieces.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters `rawurlencode` leaves alone: `A-Z a-z 0-9 - _ . ~`.
const RAW: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// PHP's `rawurlencode` (RFC 3986).
pub fn rawurlencode(s: &str) -> String {
    utf8_percent_encode(s, RAW).to_string()
}

/// Decode a query component the way PHP fills `$_GET` (`+` is a space). Invalid UTF-8 is
/// replaced rather than rejected.
pub fn form_decode(s: &str) -> String {
    // Nearly every value a device sends has nothing to decode.
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return s.to_string();
    }
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

/// The reference's `makeFullUrl`: a value without `://` is taken relative to the base URL.
pub fn make_full_url(base: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let mut out = String::with_capacity(base.len() + url.len() + 1);
    out.push_str(base);
    if !url.starts_with('/') {
        out.push('/');
    }
    out.push_str(url);
    out
}

/// Apply an `httpsurlmod` expression (`!pattern!replacement!flags`, first character is the
/// delimiter) to a URL. Returns the URL unchanged, plus an error text, if the expression is
/// malformed.
pub fn apply_urlmod(expr: &str, url: &str) -> Result<String, String> {
    let mut chars = expr.chars();
    let Some(delim) = chars.next() else {
        return Ok(url.to_string());
    };
    let parts: Vec<&str> = expr.split(delim).collect();
    if parts.len() < 3 {
        return Err(format!(
            "httpsurlmod '{expr}' is not of the form !pattern!replacement!flags"
        ));
    }
    let pattern = parts[1];
    let replacement = parts[2];
    let flags = parts.get(3).copied().unwrap_or("");
    let mut re = String::new();
    if flags.contains('i') {
        re.push_str("(?i)");
    }
    re.push_str(pattern);
    let re = regex::Regex::new(&re).map_err(|e| format!("httpsurlmod pattern '{pattern}': {e}"))?;
    // PHP replacement references ($1, \1) map onto regex's ${1}.
    let rep = php_replacement(replacement);
    Ok(re.replace_all(url, rep.as_str()).into_owned())
}

fn php_replacement(r: &str) -> String {
    let mut out = String::new();
    let b: Vec<char> = r.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if (c == '$' || c == '\\') && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
            out.push_str(&format!("${{{}}}", b[i + 1]));
            i += 2;
            continue;
        }
        if c == '$' {
            out.push_str("$$");
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decode_like_php_urldecode() {
        assert_eq!(form_decode("IP232"), "IP232");
        assert_eq!(form_decode(""), "");
        assert_eq!(form_decode("a+b%20c%2B"), "a b c+");
        assert_eq!(form_decode("%41%zz"), "A%zz");
        assert_eq!(form_decode("x%ffy"), "x\u{fffd}y");
    }

    #[test]
    fn rawurlencode_like_php() {
        assert_eq!(
            rawurlencode("http://srv/upd/update.php?polling=5&type=#t"),
            "http%3A%2F%2Fsrv%2Fupd%2Fupdate.php%3Fpolling%3D5%26type%3D%23t"
        );
        assert_eq!(rawurlencode("a b~c"), "a%20b~c");
    }

    #[test]
    fn urlmod_removes_mtls() {
        assert_eq!(
            apply_urlmod("!mtls/!!i", "https://h:444/MTLS/update.php").unwrap(),
            "https://h:444/update.php"
        );
        assert!(apply_urlmod("!oops", "x").is_err());
    }

    #[test]
    fn full_url() {
        assert_eq!(make_full_url("http://h/u", "fw/1/"), "http://h/u/fw/1/");
        assert_eq!(make_full_url("http://h/u", "https://x/y"), "https://x/y");
    }
}
