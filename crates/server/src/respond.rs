//! Small HTTP helpers shared by the handlers: plain-text responses, reading request bodies
//! with a size limit, and the request facts the engine needs (peer, local port, host).
//!
//! No device logic here.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::app::ListenerInfo;

/// A `text/plain; charset=utf-8` response.
pub fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// A `text/plain` response carrying raw bytes (ISO-8859-1 text from devices or snippets).
pub fn bytes(status: StatusCode, body: Vec<u8>) -> Response {
    // No charset: the bytes are the snippets' own (innovaphone configs are ISO-8859-1).
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body,
    )
        .into_response()
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// More than the allowed bytes (announced or sent).
    TooLarge { limit: u64 },
    /// The client went away or sent a broken body.
    Read(String),
}

/// Read a whole request body (any transfer encoding), refusing more than `limit` bytes.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, BodyError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, cap).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                Err(BodyError::TooLarge { limit })
            } else {
                Err(BodyError::Read(e.to_string()))
            }
        }
    }
}

/// The response for a [`BodyError`], with a log line.
pub fn body_error(err: BodyError, what: &str) -> Response {
    match err {
        BodyError::TooLarge { limit } => {
            tracing::warn!(limit, what, "upload refused: body too large");
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "# {what}: upload larger than {limit} bytes refused, nothing written \
                     (raise server.max_upload_bytes to allow it) - exit\r\n"
                ),
            )
        }
        BodyError::Read(reason) => {
            tracing::warn!(what, %reason, "cannot read upload body");
            text(
                StatusCode::BAD_REQUEST,
                format!("# {what}: cannot read the request body: {reason} - exit\r\n"),
            )
        }
    }
}

/// Connection facts of one request.
#[derive(Debug, Clone)]
pub struct ConnFacts {
    /// Peer address as the reference reports it (`::ffff:` stripped, `0.0.0.0` if unknown).
    pub peer_ip: String,
    pub local: Option<SocketAddr>,
    pub https: bool,
    /// `Host` header, else the URI authority, else the local address.
    pub host: String,
    /// `X-Forwarded-For`, only when the peer is a trusted reverse proxy
    /// ([`crate::ConnInfo::trusted_proxy`]); from anyone else the header is ignored.
    pub forwarded_for: Option<String>,
    /// The client certificate of an MTLS connection.
    pub client_cert: Option<autoprov_core::innovaphone::ClientCert>,
}

/// Named once: looking a header up by a `&str` parses the name on every request.
const X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");

impl ConnFacts {
    pub fn of(parts: &axum::http::request::Parts) -> ConnFacts {
        let conn = parts.extensions.get::<crate::ConnInfo>();
        let listener = parts.extensions.get::<ListenerInfo>().copied();
        let local = listener.map(|l| l.local);
        let peer_ip = match conn.and_then(|c| c.peer_ip.as_deref()) {
            Some(ip) => ip.to_string(),
            None => parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| peer_text(c.0.ip()))
                .unwrap_or_else(|| "0.0.0.0".to_string()),
        };
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .or_else(|| local.map(|l| l.to_string()))
            .unwrap_or_default();
        let forwarded_for = parts
            .headers
            .get(&X_FORWARDED_FOR)
            .and_then(|h| h.to_str().ok())
            .map(str::trim)
            .filter(|h| !h.is_empty() && conn.is_some_and(|c| c.trusted_proxy))
            .map(str::to_string);
        ConnFacts {
            peer_ip,
            local,
            https: listener.is_some_and(|l| l.https),
            host,
            forwarded_for,
            client_cert: conn.and_then(|c| c.client_cert.clone()),
        }
    }
}

/// A peer address as the reference reports it: an IPv4 address mapped into IPv6 as plain
/// IPv4.
pub(crate) fn peer_text(ip: std::net::IpAddr) -> String {
    let v4 = match ip {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let Some(v4) = v4 else {
        return ip.to_string();
    };
    // Written by hand: the formatter's padding support makes `Display` ten times dearer.
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(itoa::Buffer::new().format(octet));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_limit() {
        let h = HeaderMap::new();
        let ok = read_body(&h, Body::from("12345"), 5).await.unwrap();
        assert_eq!(&ok[..], b"12345");
        assert!(matches!(
            read_body(&h, Body::from("123456"), 5).await,
            Err(BodyError::TooLarge { limit: 5 })
        ));
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100"));
        assert!(matches!(
            read_body(&h, Body::from("1"), 5).await,
            Err(BodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn mapped_v4() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(peer_text(ip("::ffff:10.0.0.1")), "10.0.0.1");
        assert_eq!(peer_text(ip("fe80::1")), "fe80::1");
        assert_eq!(peer_text(ip("192.0.2.7")), "192.0.2.7");
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.200.3.40",
            "::1",
            "::1.2.3.4",
            "2001:db8::7",
        ] {
            assert_eq!(peer_text(ip(text)), ip(text).to_string());
        }
    }
}
