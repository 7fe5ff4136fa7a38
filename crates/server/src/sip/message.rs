//! A small SIP message model: parse one datagram, read headers, build and serialise messages.
//!
//! Hand-written on purpose (see ARCHITECTURE.md): plug-and-play and check-sync need a handful of
//! headers, and header values are kept verbatim, so a `sip:MAC%3a0004…` URI leaves exactly as
//! it came (general SIP stacks re-encode URIs and have double-encoded that one). Parsing is
//! bounded: datagrams over [`MAX_MESSAGE`] bytes, more than [`MAX_HEADERS`] headers, a bad start
//! line or a body shorter than its `Content-Length` are errors, never panics.

use std::fmt::Write;

/// Largest datagram parsed; SIP over UDP stays far below (RFC 3261 §18.1.1 asks for < 1300).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Most header lines accepted in one message.
pub const MAX_HEADERS: usize = 64;

/// Why a datagram is not a usable SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message of {0} bytes is larger than {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("message is not UTF-8 text")]
    NotText,
    #[error("message ends before the end of its headers (truncated)")]
    Truncated,
    #[error("body has {got} bytes but Content-Length says {declared} (truncated)")]
    ShortBody { declared: usize, got: usize },
    #[error("bad start line '{0}'")]
    BadStartLine(String),
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("bad header line '{0}'")]
    BadHeader(String),
    #[error("bad Content-Length '{0}'")]
    BadContentLength(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// One SIP request or response. Header names are stored in their long form (`v` → `Via`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Compact header forms (RFC 3261 §7.3.3, RFC 6665 for `o`/`u`).
fn long_name(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "e" | "E" => "Content-Encoding",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "f" | "F" => "From",
        "s" | "S" => "Subject",
        "k" | "K" => "Supported",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        "o" | "O" => "Event",
        "u" | "U" => "Allow-Events",
        other => other,
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

impl Message {
    pub fn request(method: &str, uri: &str) -> Message {
        Message {
            start: StartLine::Request {
                method: method.to_string(),
                uri: uri.to_string(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn response(code: u16, reason: &str) -> Message {
        Message {
            start: StartLine::Response {
                code,
                reason: reason.to_string(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Parse one datagram.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge(buf.len()));
        }
        // Keep-alives and stray bytes before the start line are allowed by RFC 3261 §7.5.
        let start = buf
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(buf.len());
        let buf = &buf[start..];
        let (head_len, sep_len) = match find(buf, b"\r\n\r\n") {
            Some(p) => (p, 4),
            None => match find(buf, b"\n\n") {
                Some(p) => (p, 2),
                None => return Err(ParseError::Truncated),
            },
        };
        let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| ParseError::NotText)?;
        let rest = &buf[head_len + sep_len..];
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().unwrap_or_default();
        let start = parse_start(first)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation of the previous header.
                match headers.last_mut() {
                    Some((_, v)) => {
                        v.push(' ');
                        v.push_str(line.trim());
                        continue;
                    }
                    None => return Err(ParseError::BadHeader(clip(line))),
                }
            }
            if headers.len() >= MAX_HEADERS {
                return Err(ParseError::TooManyHeaders);
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| ParseError::BadHeader(clip(line)))?;
            let name = name.trim();
            if !is_token(name) {
                return Err(ParseError::BadHeader(clip(line)));
            }
            headers.push((long_name(name).to_string(), value.trim().to_string()));
        }
        let mut msg = Message {
            start,
            headers,
            body: Vec::new(),
        };
        let body_len = match msg.header("Content-Length") {
            Some(v) => {
                let n: usize = v
                    .trim()
                    .parse()
                    .map_err(|_| ParseError::BadContentLength(clip(v)))?;
                if n > rest.len() {
                    return Err(ParseError::ShortBody {
                        declared: n,
                        got: rest.len(),
                    });
                }
                n
            }
            // Over UDP the body runs to the end of the datagram (RFC 3261 §18.3).
            None => rest.len(),
        };
        msg.body = rest[..body_len].to_vec();
        Ok(msg)
    }

    /// The first value of a header (long or compact name, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = long_name(name);
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = long_name(name).to_string();
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Message {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Copy every value of a header from another message.
    pub fn copy_from(&mut self, other: &Message, name: &str) -> &mut Message {
        for v in other.headers_named(name) {
            self.headers
                .push((long_name(name).to_string(), v.to_string()));
        }
        self
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> &str {
        match &self.start {
            StartLine::Response { reason, .. } => reason,
            StartLine::Request { .. } => "",
        }
    }

    /// `CSeq: 12 NOTIFY` → `(12, "NOTIFY")`.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?;
        let (n, m) = v.trim().split_once(char::is_whitespace)?;
        Some((n.parse().ok()?, m.trim()))
    }

    /// The message on the wire. `Content-Length` is always written last among the headers and
    /// always matches the body (any stored value is replaced).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            let _ = write!(s, "{n}: {v}\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn parse_start(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::BadStartLine(clip(line));
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&code) {
            return Err(bad());
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if version != "SIP/2.0" || !is_token(method) || uri.is_empty() || !uri.contains(':') {
        return Err(bad());
    }
    Ok(StartLine::Request {
        method: method.to_string(),
        uri: uri.to_string(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// At most 80 characters of untrusted text, for error messages and logs.
fn clip(s: &str) -> String {
    let s: String = s.chars().take(80).collect();
    s.escape_debug().to_string()
}

/// A header parameter: `param(r#"<sip:a>;tag=x;branch=y"#, "tag")` → `Some("x")`; quotes are
/// removed. Parameters are looked up after the first `;` outside `<…>` and quotes.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after = match value.rfind('>') {
        Some(p) => &value[p + 1..],
        None => value,
    };
    after.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The URI inside a name-addr (`"x" <sip:a@b>;tag=1` → `sip:a@b`) or an addr-spec (`sip:a@b;tag=1`).
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "SUBSCRIBE sip:MAC%3a000413A11FA7@224.0.1.75 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1;rport\r\n\
        From: <sip:MAC%3a000413A11FA7@224.0.1.75>;tag=abc\r\n\
        t: <sip:MAC%3a000413A11FA7@224.0.1.75>\r\n\
        i: 42@10.0.0.9\r\n\
        CSeq: 7 SUBSCRIBE\r\n\
        Event: ua-profile;profile-type=\"device\";vendor=\"snom\";model=\"snomD120\";\r\n \
        version=\"10.1\"\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn parse_subscribe() {
        let m = Message::parse(SUB.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("SUBSCRIBE"));
        assert_eq!(m.uri(), Some("sip:MAC%3a000413A11FA7@224.0.1.75"));
        assert_eq!(m.header("call-id"), Some("42@10.0.0.9"));
        assert_eq!(m.header("TO"), Some("<sip:MAC%3a000413A11FA7@224.0.1.75>"));
        assert_eq!(m.cseq(), Some((7, "SUBSCRIBE")));
        let ev = m.header("o").unwrap();
        assert_eq!(param(ev, "model"), Some("snomD120"));
        assert_eq!(param(ev, "version"), Some("10.1"));
        assert_eq!(param(m.header("From").unwrap(), "tag"), Some("abc"));
        assert_eq!(
            uri_of(m.header("From").unwrap()),
            "sip:MAC%3a000413A11FA7@224.0.1.75"
        );
    }

    #[test]
    fn round_trip_keeps_encoded_uris() {
        let m = Message::parse(SUB.as_bytes()).unwrap();
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(m, again);
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.starts_with("SUBSCRIBE sip:MAC%3a000413A11FA7@224.0.1.75 SIP/2.0\r\n"));
        assert!(text.contains("To: <sip:MAC%3a000413A11FA7@224.0.1.75>\r\n"));
        assert!(!text.contains("%25"));
    }

    #[test]
    fn bodies() {
        let mut m = Message::request("NOTIFY", "sip:10.0.0.9:5060");
        m.push("Content-Length", "99");
        m.body = b"http://x/".to_vec();
        let bytes = m.to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains("Content-Length: 9\r\n\r\nhttp://x/"));
        let p = Message::parse(&bytes).unwrap();
        assert_eq!(p.body, b"http://x/");
        // Extra bytes after the declared body are ignored.
        let mut more = bytes.clone();
        more.extend_from_slice(b"junk");
        assert_eq!(Message::parse(&more).unwrap().body, b"http://x/");
    }

    #[test]
    fn bad_input() {
        assert_eq!(Message::parse(b""), Err(ParseError::Truncated));
        assert_eq!(
            Message::parse(&SUB.as_bytes()[..60]),
            Err(ParseError::Truncated)
        );
        let short = SUB.replace("Content-Length: 0", "Content-Length: 10");
        assert!(matches!(
            Message::parse(short.as_bytes()),
            Err(ParseError::ShortBody {
                declared: 10,
                got: 0
            })
        ));
        assert!(matches!(
            Message::parse(&vec![b'A'; MAX_MESSAGE + 1]),
            Err(ParseError::TooLarge(_))
        ));
        assert!(matches!(
            Message::parse(b"HELLO\r\n\r\n"),
            Err(ParseError::BadStartLine(_))
        ));
        assert!(matches!(
            Message::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(ParseError::BadStartLine(_))
        ));
        assert!(matches!(
            Message::parse(b"SIP/2.0 99 X\r\n\r\n"),
            Err(ParseError::BadStartLine(_))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let text = format!("OPTIONS sip:a SIP/2.0\r\n{many}\r\n");
        assert_eq!(
            Message::parse(text.as_bytes()),
            Err(ParseError::TooManyHeaders)
        );
        assert!(matches!(
            Message::parse(b"OPTIONS sip:a SIP/2.0\r\nno colon\r\n\r\n"),
            Err(ParseError::BadHeader(_))
        ));
        assert!(matches!(
            Message::parse(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n"),
            Err(ParseError::BadContentLength(_))
        ));
        assert_eq!(
            Message::parse(b"OPTIONS sip:a SIP/2.0\r\nX: \xff\r\n\r\n"),
            Err(ParseError::NotText)
        );
    }

    #[test]
    fn responses() {
        let m = Message::parse(b"SIP/2.0 401 Unauthorized\r\nCSeq: 1 NOTIFY\r\n\r\n").unwrap();
        assert_eq!(m.status(), Some(401));
        assert_eq!(m.reason(), "Unauthorized");
        assert_eq!(m.cseq(), Some((1, "NOTIFY")));
    }
}
