//! Transfer mechanics of serving a firmware file (catalogue images and innovaphone `/fw/`
//! files alike): byte ranges (RFC 9110 §14), conditional
//! requests (§13: `If-Match`, `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since`,
//! `If-Range`) and a streaming body of slices of the memory-mapped file that holds a download slot
//! until the last byte is sent or the client goes away.
//!
//! Nothing here knows about devices or the catalogue's rules; it gets an entity tag, a
//! modification time and a size and answers in HTTP.

use std::collections::VecDeque;

use axum::body::Body;
use axum::http::{header, response, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

/// More ranges than this in one request are ignored (the whole file is sent instead), so a
/// request cannot make the server send the same bytes over and over.
pub const MAX_RANGES: usize = 16;

/// Bytes handed to the connection per chunk (a slice of the mapping, or one read).
const CHUNK: u64 = 128 * 1024;

/// A satisfiable byte range: first byte and length (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: u64,
}

impl ByteRange {
    /// Last byte (inclusive), as in `Content-Range`.
    pub fn last(&self) -> u64 {
        self.start + self.len - 1
    }

    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// What a `Range` header asks for, against a representation of a known size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeSpec {
    /// No (usable) Range header: send everything with 200.
    Full,
    /// Satisfiable ranges: one means a single-part 206, several a `multipart/byteranges` 206.
    /// In request order; overlapping or adjacent ranges are merged (then in file order).
    Partial(Vec<ByteRange>),
    /// Well-formed, but no range overlaps the content: 416.
    Unsatisfiable,
}

/// Parse a `Range` header value against `size` bytes. A header with another unit, bad syntax,
/// or more than [`MAX_RANGES`] ranges is ignored ([`RangeSpec::Full`]), as RFC 9110 allows.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeSpec {
    let Some(value) = value else {
        return RangeSpec::Full;
    };
    let Some((unit, set)) = value.split_once('=') else {
        return RangeSpec::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeSpec::Full;
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.is_empty() || specs.len() > MAX_RANGES {
        return RangeSpec::Full;
    }
    let mut ranges = Vec::new();
    for spec in specs {
        let Some((first, last)) = spec.split_once('-') else {
            return RangeSpec::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        let range = if first.is_empty() {
            // suffix: the last N bytes
            let Some(n) = number(last) else {
                return RangeSpec::Full;
            };
            (n > 0 && size > 0).then(|| ByteRange {
                start: size - n.min(size),
                len: n.min(size),
            })
        } else {
            let Some(first) = number(first) else {
                return RangeSpec::Full;
            };
            let last = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(l) if l >= first => l,
                    _ => return RangeSpec::Full,
                }
            };
            (first < size).then(|| ByteRange {
                start: first,
                len: last.min(size - 1) - first + 1,
            })
        };
        ranges.extend(range);
    }
    if ranges.is_empty() {
        return RangeSpec::Unsatisfiable;
    }
    let overlapping = ranges.iter().enumerate().any(|(i, a)| {
        ranges[i + 1..]
            .iter()
            .any(|b| a.start <= b.end() && b.start <= a.end())
    });
    if overlapping {
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(m) if r.start <= m.end() => m.len = m.len.max(r.end() - m.start),
                _ => merged.push(r),
            }
        }
        ranges = merged;
    }
    RangeSpec::Partial(ranges)
}

/// Digits only; a number too large for u64 reads as u64::MAX (it is beyond any file anyway).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

/// The outcome of the conditional headers of a GET or HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Send the representation; `use_range` is false when `If-Range` did not match.
    Proceed { use_range: bool },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluate the conditional headers in the order of RFC 9110 §13.2.2 against the strong entity
/// tag `etag` (with quotes) and the modification time `modified` (Unix seconds).
pub fn evaluate(headers: &HeaderMap, etag: &str, modified: i64) -> Precondition {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
    };
    let date = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(http_date)
    };
    let if_match = values(header::IF_MATCH);
    if !if_match.is_empty() {
        if !tag_list_matches(&if_match, etag, false) {
            return Precondition::Failed;
        }
    } else if date(header::IF_UNMODIFIED_SINCE).is_some_and(|d| modified > d) {
        return Precondition::Failed;
    }
    let if_none_match = values(header::IF_NONE_MATCH);
    if !if_none_match.is_empty() {
        if tag_list_matches(&if_none_match, etag, true) {
            return Precondition::NotModified;
        }
    } else if date(header::IF_MODIFIED_SINCE).is_some_and(|d| modified <= d) {
        return Precondition::NotModified;
    }
    let use_range = match headers.get(header::IF_RANGE).map(|v| v.to_str()) {
        None => true,
        Some(Err(_)) => false,
        Some(Ok(v)) => {
            let v = v.trim();
            if v.starts_with('"') || v.starts_with("W/") {
                // a strong comparison: a weak tag never matches
                v == etag
            } else {
                http_date(v) == Some(modified)
            }
        }
    };
    Precondition::Proceed { use_range }
}

/// Whether a list of entity tags (`*` or `"a", W/"b"` over one or more header lines) contains
/// `etag`. `weak` selects the weak comparison (`W/` prefixes ignored) used by `If-None-Match`.
pub(crate) fn tag_list_matches(lines: &[&str], etag: &str, weak: bool) -> bool {
    for line in lines {
        let mut rest = line.trim();
        if rest == "*" {
            return true;
        }
        while !rest.is_empty() {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let is_weak = rest.starts_with("W/");
            if is_weak {
                rest = &rest[2..];
            }
            if !rest.starts_with('"') {
                return false; // malformed: match nothing
            }
            let Some(close) = rest[1..].find('"') else {
                return false;
            };
            let tag = &rest[..close + 2];
            if tag == etag && (weak || !is_weak) {
                return true;
            }
            rest = &rest[close + 2..];
        }
    }
    false
}

/// An IMF-fixdate (or the obsolete forms) as Unix seconds.
pub fn http_date(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

/// Unix seconds as an IMF-fixdate.
pub fn fmt_http_date(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    httpdate::fmt_http_date(t)
}

/// One piece of a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal bytes (multipart headers).
    Bytes(Bytes),
    /// A range of the file.
    File(ByteRange),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File(r) => r.len,
        }
    }
}

/// The body parts of a `multipart/byteranges` response and the boundary they use.
pub fn multipart(ranges: &[ByteRange], size: u64, boundary: &str) -> Vec<Part> {
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for r in ranges {
        parts.push(Part::Bytes(Bytes::from(format!(
            "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: bytes {}-{}/{size}\r\n\r\n",
            r.start,
            r.last()
        ))));
        parts.push(Part::File(*r));
    }
    parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    parts
}

/// Total length of `parts`.
pub fn body_len(parts: &[Part]) -> u64 {
    parts.iter().map(Part::len).sum()
}

/// What a file's representation looks like to HTTP.
pub struct Entity<'a> {
    pub etag: &'a str,
    /// Last modification, Unix seconds.
    pub modified: i64,
    pub size: u64,
    pub cache_control: &'a str,
    /// Seed of the `multipart/byteranges` boundary (stable per file).
    pub boundary: &'a str,
}

/// How a GET or HEAD of an [`Entity`] is answered.
pub enum Plan {
    /// Answered without a body: 304, 412 or 416.
    Done(Response),
    /// Status and headers (with `Content-Length`) set; these parts of the file follow.
    Send(response::Builder, Vec<Part>),
}

/// 405 (with `Allow`) for a method other than GET and HEAD.
pub fn method_refused(method: &axum::http::Method) -> Option<Response> {
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return None;
    }
    let mut r = crate::respond::text(
        StatusCode::METHOD_NOT_ALLOWED,
        "# firmware is fetched with GET or HEAD\r\n".into(),
    );
    r.headers_mut().insert(
        header::ALLOW,
        axum::http::HeaderValue::from_static("GET, HEAD"),
    );
    Some(r)
}

/// Evaluate the conditional and range headers of a request for `entity`.
pub fn plan(headers: &HeaderMap, entity: &Entity<'_>) -> Plan {
    let size = entity.size;
    let base = Response::builder()
        .header(header::ETAG, entity.etag)
        .header(header::LAST_MODIFIED, fmt_http_date(entity.modified))
        .header(header::CACHE_CONTROL, entity.cache_control)
        .header(header::ACCEPT_RANGES, "bytes");
    let empty = |b: response::Builder| Plan::Done(finish(b, Body::empty()));
    let use_range = match evaluate(headers, entity.etag, entity.modified) {
        Precondition::NotModified => return empty(base.status(StatusCode::NOT_MODIFIED)),
        Precondition::Failed => return empty(base.status(StatusCode::PRECONDITION_FAILED)),
        Precondition::Proceed { use_range } => use_range,
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| use_range);
    let octets = "application/octet-stream";
    let (status, builder, parts) = match parse_range(range, size) {
        RangeSpec::Unsatisfiable => {
            return empty(
                base.status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}")),
            );
        }
        RangeSpec::Full => (
            StatusCode::OK,
            base.header(header::CONTENT_TYPE, octets),
            vec![Part::File(ByteRange {
                start: 0,
                len: size,
            })],
        ),
        RangeSpec::Partial(ranges) if ranges.len() == 1 => (
            StatusCode::PARTIAL_CONTENT,
            base.header(header::CONTENT_TYPE, octets).header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", ranges[0].start, ranges[0].last()),
            ),
            vec![Part::File(ranges[0])],
        ),
        RangeSpec::Partial(ranges) => {
            let boundary = format!("autoprov-{}", entity.boundary);
            (
                StatusCode::PARTIAL_CONTENT,
                base.header(
                    header::CONTENT_TYPE,
                    format!("multipart/byteranges; boundary={boundary}"),
                ),
                multipart(&ranges, size, &boundary),
            )
        }
    };
    let builder = builder
        .status(status)
        .header(header::CONTENT_LENGTH, body_len(&parts));
    Plan::Send(builder, parts)
}

/// The response, or a plain 500 if the headers were invalid (they are built here, so never).
pub fn finish(builder: response::Builder, body: Body) -> Response {
    builder.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the firmware response");
        let mut r = Response::new(Body::from("# internal error\r\n"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// A firmware image mapped into memory (with its file, for `sendfile`; see
/// [`crate::sendfile`]).
pub type Mapped = std::sync::Arc<crate::sendfile::MappedImage>;

/// Where a body's file bytes come from.
pub enum Source {
    /// Slices of a mapping, handed to the connection without copying (on plain HTTP sent
    /// with `sendfile`, see [`crate::sendfile::SendfileStream`]). Only for files that are
    /// never rewritten in place (catalogue images; `/fw/` files on plain HTTP, whose mapping
    /// is never read by this process).
    Mapped(Mapped),
    /// Chunks read from an open file (`/fw/` files on TLS: they must be encrypted, i.e. read,
    /// and an operator may overwrite them in place, which a mapping would not survive).
    File(std::sync::Arc<std::fs::File>),
}

impl Source {
    /// Bytes `start..end` of the file.
    async fn chunk(&self, start: usize, end: usize) -> std::io::Result<Bytes> {
        match self {
            Source::Mapped(map) => {
                if end > map.bytes().len() {
                    return Err(short());
                }
                Ok(Bytes::from_owner(Slice {
                    map: map.clone(),
                    start,
                    end,
                }))
            }
            Source::File(file) => {
                let file = file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; end - start];
                    file.read_exact_at(&mut buf, start as u64).map(|_| buf)
                })
                .await
                .map_err(std::io::Error::other)?;
                match read {
                    Ok(buf) => Ok(Bytes::from(buf)),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(short()),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

fn short() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "firmware file shorter than when the download started",
    )
}

/// One chunk: a slice of the mapping that keeps the mapping alive.
struct Slice {
    map: Mapped,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        &self.map.bytes()[self.start..self.end]
    }
}

/// A streaming body over `parts` of the file: chunks of [`CHUNK`] bytes, so nothing per
/// download but a few hundred bytes of state (mapped) or one chunk (read). The permit (a
/// download slot) is released when the body is finished or dropped (client gone).
pub fn file_body(source: Source, parts: Vec<Part>, permit: OwnedSemaphorePermit) -> Body {
    struct State {
        source: Source,
        parts: VecDeque<Part>,
        /// The file range being sent: next byte and end.
        at: usize,
        end: usize,
        _permit: OwnedSemaphorePermit,
    }
    let state = State {
        source,
        parts: parts.into(),
        at: 0,
        end: 0,
        _permit: permit,
    };
    let stream = futures_util::stream::try_unfold(state, |mut st| async move {
        loop {
            if st.at < st.end {
                let n = (st.end - st.at).min(CHUNK as usize);
                let chunk = st.source.chunk(st.at, st.at + n).await?;
                st.at += n;
                return Ok::<_, std::io::Error>(Some((chunk, st)));
            }
            match st.parts.pop_front() {
                None => return Ok(None),
                Some(Part::Bytes(b)) => return Ok(Some((b, st))),
                Some(Part::File(r)) => {
                    st.at = usize::try_from(r.start).unwrap_or(usize::MAX);
                    st.end = st
                        .at
                        .saturating_add(usize::try_from(r.len).unwrap_or(usize::MAX));
                }
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn r(start: u64, len: u64) -> ByteRange {
        ByteRange { start, len }
    }

    fn p(v: &str, size: u64) -> RangeSpec {
        parse_range(Some(v), size)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range(None, 10), RangeSpec::Full);
        assert_eq!(p("bytes=0-4", 10), RangeSpec::Partial(vec![r(0, 5)]));
        assert_eq!(p("bytes=5-", 10), RangeSpec::Partial(vec![r(5, 5)]));
        assert_eq!(p("bytes=-3", 10), RangeSpec::Partial(vec![r(7, 3)]));
        assert_eq!(p("bytes=-30", 10), RangeSpec::Partial(vec![r(0, 10)]));
        assert_eq!(p("bytes=8-100", 10), RangeSpec::Partial(vec![r(8, 2)]));
        assert_eq!(p("Bytes = 9-9", 10), RangeSpec::Partial(vec![r(9, 1)]));
        assert_eq!(
            p("bytes=0-99999999999999999999999", 10),
            RangeSpec::Partial(vec![r(0, 10)])
        );
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(p("bytes=10-", 10), RangeSpec::Unsatisfiable);
        assert_eq!(p("bytes=10-20", 10), RangeSpec::Unsatisfiable);
        assert_eq!(p("bytes=-0", 10), RangeSpec::Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), RangeSpec::Unsatisfiable);
        assert_eq!(p("bytes=-5", 0), RangeSpec::Unsatisfiable);
        assert_eq!(
            p("bytes=99999999999999999999-", 10),
            RangeSpec::Unsatisfiable
        );
        // one satisfiable range is enough
        assert_eq!(p("bytes=20-30,2-3", 10), RangeSpec::Partial(vec![r(2, 2)]));
    }

    #[test]
    fn malformed_ranges_are_ignored() {
        for bad in [
            "bytes",
            "bytes=",
            "bytes=abc",
            "bytes=5-1",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=+1-2",
            "items=0-1",
            "bytes=0x1-2",
        ] {
            assert_eq!(p(bad, 10), RangeSpec::Full, "{bad}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(p(&many, 10), RangeSpec::Full);
    }

    #[test]
    fn multiple_ranges_keep_order_unless_they_overlap() {
        assert_eq!(
            p("bytes=6-7, 0-1", 10),
            RangeSpec::Partial(vec![r(6, 2), r(0, 2)])
        );
        assert_eq!(
            p("bytes=0-3,2-5,8-", 10),
            RangeSpec::Partial(vec![r(0, 6), r(8, 2)])
        );
        // adjacent ranges are merged too
        assert_eq!(p("bytes=4-5,0-3", 10), RangeSpec::Partial(vec![r(0, 6)]));
        assert_eq!(p("bytes=0-,0-,-3", 10), RangeSpec::Partial(vec![r(0, 10)]));
        // empty list elements are allowed
        assert_eq!(p("bytes=,0-0,", 10), RangeSpec::Partial(vec![r(0, 1)]));
    }

    fn h(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    const TAG: &str = "\"abc\"";
    const T: i64 = 1_700_000_000;

    #[test]
    fn conditionals() {
        use header::*;
        use Precondition::*;
        let ok = Proceed { use_range: true };
        let ev = |pairs: &[(HeaderName, &str)]| evaluate(&h(pairs), TAG, T);
        let date = fmt_http_date(T);
        let before = fmt_http_date(T - 1);
        assert_eq!(ev(&[]), ok);
        assert_eq!(ev(&[(IF_NONE_MATCH, "\"abc\"")]), NotModified);
        assert_eq!(ev(&[(IF_NONE_MATCH, "W/\"abc\"")]), NotModified);
        assert_eq!(ev(&[(IF_NONE_MATCH, "\"x\", \"abc\"")]), NotModified);
        assert_eq!(
            ev(&[(IF_NONE_MATCH, "\"x\""), (IF_NONE_MATCH, "\"abc\"")]),
            NotModified
        );
        assert_eq!(ev(&[(IF_NONE_MATCH, "*")]), NotModified);
        assert_eq!(ev(&[(IF_NONE_MATCH, "\"abd\"")]), ok);
        assert_eq!(ev(&[(IF_NONE_MATCH, "abc")]), ok);
        // If-None-Match wins over If-Modified-Since
        assert_eq!(
            ev(&[(IF_NONE_MATCH, "\"x\""), (IF_MODIFIED_SINCE, &date)]),
            ok
        );
        assert_eq!(ev(&[(IF_MODIFIED_SINCE, &date)]), NotModified);
        assert_eq!(ev(&[(IF_MODIFIED_SINCE, &before)]), ok);
        assert_eq!(ev(&[(IF_MODIFIED_SINCE, "yesterday")]), ok);
        assert_eq!(ev(&[(IF_MATCH, "\"abc\"")]), ok);
        assert_eq!(ev(&[(IF_MATCH, "W/\"abc\"")]), Failed);
        assert_eq!(ev(&[(IF_MATCH, "\"zzz\"")]), Failed);
        assert_eq!(ev(&[(IF_UNMODIFIED_SINCE, &before)]), Failed);
        assert_eq!(ev(&[(IF_UNMODIFIED_SINCE, &date)]), ok);
    }

    #[test]
    fn if_range() {
        use header::*;
        let ev = |v: &str| evaluate(&h(&[(IF_RANGE, v)]), TAG, T);
        let yes = Precondition::Proceed { use_range: true };
        let no = Precondition::Proceed { use_range: false };
        assert_eq!(ev("\"abc\""), yes);
        assert_eq!(ev("W/\"abc\""), no);
        assert_eq!(ev("\"old\""), no);
        assert_eq!(ev(&fmt_http_date(T)), yes);
        assert_eq!(ev(&fmt_http_date(T - 5)), no);
        assert_eq!(ev("garbage"), no);
    }

    #[test]
    fn multipart_layout() {
        let parts = multipart(&[r(0, 2), r(5, 1)], 10, "B");
        assert_eq!(parts.len(), 5);
        assert_eq!(
            parts[0],
            Part::Bytes(Bytes::from_static(
                b"\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-1/10\r\n\r\n"
            ))
        );
        assert_eq!(parts[1], Part::File(r(0, 2)));
        assert_eq!(parts[4], Part::Bytes(Bytes::from_static(b"\r\n--B--\r\n")));
        assert_eq!(
            body_len(&parts),
            body_len(&parts[..4]) + "\r\n--B--\r\n".len() as u64
        );
    }

    #[test]
    fn dates() {
        assert_eq!(fmt_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:10 GMT"), Some(10));
        assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_date("nope"), None);
    }
}
