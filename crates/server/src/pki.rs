//! X.509 for autoprov: reading certificates, private keys and signing requests (PEM or DER)
//! with clear messages about what a file really holds, the self-signed server certificate, and
//! the built-in CA (`autoprov ca init` / `ca sign`) that signs device CSRs.
//!
//! One crypto provider only (aws-lc-rs, through rustls, rcgen and x509-parser). Synchronous:
//! call from a blocking thread or the CLI. Must not know about HTTP or update scripts; which
//! device gets which certificate is decided in [`crate::rollout`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate, X509Name};

use autoprov_core::Site;

use crate::fsutil::{atomic_write, atomic_write_private};

/// What went wrong; the message names the file or value and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The input is not what it should be (wrong format, wrong kind of object, bad signature).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Key generation or signing failed.
    #[error("{0}")]
    Crypto(String),
}

fn invalid(msg: impl Into<String>) -> PkiError {
    PkiError::Invalid(msg.into())
}

/// The crypto provider of every TLS listener and verification (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// SHA-256 over `der`, as `AB:CD:...` (how browsers and `openssl x509 -fingerprint` show it).
pub fn fingerprint(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The PEM block labels in `bytes` (`CERTIFICATE`, `PRIVATE KEY`, ...), in order.
pub fn pem_labels(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .map(|l| l.trim_end_matches('-').trim().to_string())
        .collect()
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]).contains("-----BEGIN ")
}

/// What a DER blob is, for messages: a certificate, a CSR, or neither.
fn der_kind(der: &[u8]) -> &'static str {
    if X509Certificate::from_der(der).is_ok() {
        "an X.509 certificate"
    } else if X509CertificationRequest::from_der(der).is_ok() {
        "a certificate signing request"
    } else {
        "not DER-encoded X.509 data"
    }
}

/// Read one or more certificates, PEM (`CERTIFICATE` blocks) or a single DER certificate.
/// `what` names the input in messages (a file name, "the upload").
pub fn read_certs(bytes: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    if bytes.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if looks_like_pem(bytes) {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("{what}: broken PEM ({e})")))?;
        if certs.is_empty() {
            let labels = pem_labels(bytes);
            return Err(invalid(format!(
                "{what} is PEM holding {} instead of a CERTIFICATE",
                if labels.is_empty() {
                    "nothing readable".to_string()
                } else {
                    labels.join(", ")
                }
            )));
        }
        for (i, c) in certs.iter().enumerate() {
            if let Err(e) = X509Certificate::from_der(c) {
                return Err(invalid(format!(
                    "{what}: certificate #{} does not parse ({e})",
                    i + 1
                )));
            }
        }
        return Ok(certs);
    }
    match X509Certificate::from_der(bytes) {
        Ok(([], _)) => Ok(vec![CertificateDer::from(bytes.to_vec())]),
        Ok(_) => Err(invalid(format!(
            "{what}: DER certificate followed by extra bytes"
        ))),
        Err(_) => Err(invalid(format!(
            "{what} is not a certificate in PEM or DER form (it is {})",
            der_kind(bytes)
        ))),
    }
}

/// Read a private key (PEM: PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(bytes: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|_| {
        let labels = pem_labels(bytes);
        invalid(if labels.is_empty() {
            format!("{what} is not a PEM private key")
        } else {
            format!("{what} holds {} but no PRIVATE KEY", labels.join(", "))
        })
    })
}

/// The facts of a certificate that autoprov shows and decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject_cn: String,
    pub issuer_cn: String,
    /// Epoch seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Serial in hex.
    pub serial: String,
    /// SHA-256 fingerprint (`AB:CD:...`).
    pub fingerprint: String,
    pub is_ca: bool,
    /// The DER SubjectPublicKeyInfo (to match a certificate with its CSR).
    pub spki: Vec<u8>,
}

fn first_cn(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Summarise one DER certificate.
pub fn summarize(der: &[u8]) -> Result<CertSummary, PkiError> {
    let (_, c) = X509Certificate::from_der(der)
        .map_err(|e| invalid(format!("not an X.509 certificate ({e})")))?;
    Ok(CertSummary {
        subject_cn: first_cn(c.subject()),
        issuer_cn: first_cn(c.issuer()),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        serial: c.raw_serial_as_string().replace(':', ""),
        fingerprint: fingerprint(der),
        is_ca: c.is_ca(),
        spki: c.public_key().raw.to_vec(),
    })
}

/// A verified certificate signing request.
#[derive(Debug)]
pub struct Csr {
    pub der: Vec<u8>,
    /// The CN the device asked for (only shown: autoprov sets the CN itself).
    pub subject_cn: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// The DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    key: CsrKey,
}

/// The CSR's public key, in the form rcgen signs.
#[derive(Debug)]
struct CsrKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// Read and verify a CSR in DER or PEM (`CERTIFICATE REQUEST`) form. Refuses certificates,
/// keys and anything else with a message saying what the input holds.
pub fn read_csr(bytes: &[u8], what: &str) -> Result<Csr, PkiError> {
    if bytes.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    let der: Vec<u8> = if looks_like_pem(bytes) {
        let text = String::from_utf8_lossy(bytes);
        let mut b64 = String::new();
        let mut inside = false;
        for line in text.lines() {
            let l = line.trim();
            if l == "-----BEGIN CERTIFICATE REQUEST-----"
                || l == "-----BEGIN NEW CERTIFICATE REQUEST-----"
            {
                inside = true;
            } else if l.starts_with("-----END ") && inside {
                break;
            } else if inside {
                b64.push_str(l);
            }
        }
        if !inside {
            let labels = pem_labels(bytes);
            return Err(invalid(format!(
                "{what} is PEM holding {} instead of a CERTIFICATE REQUEST",
                labels.join(", ")
            )));
        }
        base64_decode(&b64).map_err(|e| invalid(format!("{what}: broken PEM ({e})")))?
    } else {
        bytes.to_vec()
    };
    let (rest, req) = X509CertificationRequest::from_der(&der).map_err(|_| {
        invalid(format!(
            "{what} is not a certificate signing request (it is {})",
            der_kind(&der)
        ))
    })?;
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{what}: signing request followed by {} extra bytes",
            rest.len()
        )));
    }
    req.verify_signature().map_err(|e| {
        invalid(format!(
            "{what}: the signing request's signature does not verify ({e}); it is damaged or was not made with its own key"
        ))
    })?;
    let info = &req.certification_request_info;
    let spki = &info.subject_pki;
    let alg = key_algorithm(
        &spki.algorithm.algorithm.to_id_string(),
        spki.algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string())
            .as_deref(),
    )
    .ok_or_else(|| {
        invalid(format!(
            "{what}: key algorithm {} is not supported (RSA, ECDSA P-256/P-384 and Ed25519 are)",
            spki.algorithm.algorithm.to_id_string()
        ))
    })?;
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    if let Some(exts) = req.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                        GeneralName::IPAddress(b) => {
                            if let Ok(a) = <[u8; 4]>::try_from(*b) {
                                ips.push(IpAddr::from(a));
                            } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                                ips.push(IpAddr::from(a));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(Csr {
        subject_cn: first_cn(&info.subject),
        dns_names,
        ips,
        spki: spki.raw.to_vec(),
        key: CsrKey {
            raw: spki.subject_public_key.data.to_vec(),
            alg,
        },
        der,
    })
}

/// The rcgen algorithm whose SubjectPublicKeyInfo encoding matches a key (by OIDs).
fn key_algorithm(alg: &str, param: Option<&str>) -> Option<&'static SignatureAlgorithm> {
    match (alg, param) {
        ("1.2.840.113549.1.1.1", _) => Some(&rcgen::PKCS_RSA_SHA256),
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => Some(&rcgen::PKCS_ECDSA_P256_SHA256),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => Some(&rcgen::PKCS_ECDSA_P384_SHA384),
        ("1.3.101.112", _) => Some(&rcgen::PKCS_ED25519),
        _ => None,
    }
}

/// DER CSR as PEM (`CERTIFICATE REQUEST`, 64 characters a line, LF).
pub fn csr_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE REQUEST", der)
}

/// DER certificate as PEM (`CERTIFICATE`, 64 characters a line, LF).
pub fn cert_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = crate::fsutil::base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("'{}' is not a base64 character", c as char)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

fn now_utc() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| PkiError::Crypto("no random numbers for a serial number".into()))?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte
    Ok(SerialNumber::from_slice(&b))
}

fn generate_key(key_type: &str) -> Result<KeyPair, PkiError> {
    let r = match key_type {
        "ecdsa-p256" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        _ => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
    };
    r.map_err(|e| PkiError::Crypto(format!("cannot generate a {key_type} key: {e}")))
}

/// A self-signed server certificate for `names` (DNS names or IP addresses): `(cert PEM,
/// key PEM)`, valid for ten years, RSA 2048 (what old phones speak).
pub fn self_signed(cn: &str, names: &[String]) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    for n in names {
        if let Ok(ip) = n.parse::<IpAddr>() {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        } else if let Ok(d) = n.as_str().try_into() {
            params.subject_alt_names.push(SanType::DnsName(d));
        }
    }
    let now = now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params.serial_number = Some(random_serial()?);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = generate_key("rsa2048")?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::Crypto(format!("cannot create the certificate: {e}")))?;
    Ok((cert_pem(cert.der()), key.serialize_pem()))
}

// ---------------------------------------------------------------------------------------
// The built-in CA

/// Where the site's CA lives (`[ca] cert` and `key`).
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn ca_files(site: &Site) -> Result<CaFiles, PkiError> {
    let ca = &site.config.ca;
    let cert = site.path(&ca.cert).ok_or_else(|| {
        invalid(format!(
            "[ca] cert '{}' must be a relative path inside the site",
            ca.cert
        ))
    })?;
    let key = site.path(&ca.key).ok_or_else(|| {
        invalid(format!(
            "[ca] key '{}' must be a relative path inside the site",
            ca.key
        ))
    })?;
    Ok(CaFiles { cert, key })
}

/// Create the site's CA (key and self-signed CA certificate). Refuses to replace an existing
/// one unless `force`: every certificate it signed would stop being trusted.
pub fn ca_init(site: &Site, force: bool) -> Result<CertSummary, PkiError> {
    let files = ca_files(site)?;
    let ca = &site.config.ca;
    if !force && (files.cert.exists() || files.key.exists()) {
        return Err(invalid(format!(
            "a CA already exists ({} / {}); devices trust it. Use --force only to replace it \
             (every certificate it signed stops being trusted)",
            ca.cert, ca.key
        )));
    }
    let key = generate_key(&ca.key_type)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, ca.cn.as_str());
    params.distinguished_name = dn;
    let now = now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(ca.ca_valid_days.max(1)));
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::Crypto(format!("cannot create the CA certificate: {e}")))?;
    atomic_write_private(&files.key, key.serialize_pem().as_bytes()).map_err(|source| {
        PkiError::Write {
            path: files.key.clone(),
            source,
        }
    })?;
    atomic_write(&files.cert, cert_pem(cert.der()).as_bytes()).map_err(|source| {
        PkiError::Write {
            path: files.cert.clone(),
            source,
        }
    })?;
    summarize(cert.der())
}

/// The site's CA, loaded for signing.
pub struct Authority {
    cert_der: Vec<u8>,
    key_pem: String,
    pub summary: CertSummary,
}

fn read_file(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Load the site's CA; a clear error when `ca init` has not been run.
pub fn load_ca(site: &Site) -> Result<Authority, PkiError> {
    let files = ca_files(site)?;
    if !files.cert.exists() || !files.key.exists() {
        return Err(invalid(format!(
            "the site has no CA yet ({} / {} missing): run `autoprov ca init --site {}` first",
            site.config.ca.cert,
            site.config.ca.key,
            site.dir.display()
        )));
    }
    let cert_der = read_certs(&read_file(&files.cert)?, &site.config.ca.cert)?
        .into_iter()
        .next()
        .expect("read_certs returns at least one")
        .to_vec();
    let key_pem = String::from_utf8(read_file(&files.key)?)
        .map_err(|_| invalid(format!("{} is not a PEM key", site.config.ca.key)))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| {
        invalid(format!(
            "{}: cannot load the CA key ({e})",
            site.config.ca.key
        ))
    })?;
    let summary = summarize(&cert_der)?;
    if key.subject_public_key_info() != summary.spki {
        return Err(invalid(format!(
            "{} does not belong to {}: restore the matching pair or run `ca init --force`",
            site.config.ca.key, site.config.ca.cert
        )));
    }
    Ok(Authority {
        cert_der,
        key_pem,
        summary,
    })
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Authority")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Sign `csr` for a device: the CN is `cn` whatever the CSR asked for, the CSR's DNS/IP
    /// alternative names are kept, usage is TLS client and server, validity `valid_days` from
    /// now but never past the CA's own end. Returns the certificate (DER).
    pub fn sign(&self, csr: &Csr, cn: &str, valid_days: u32) -> Result<Vec<u8>, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        for d in &csr.dns_names {
            if let Ok(name) = d.as_str().try_into() {
                params.subject_alt_names.push(SanType::DnsName(name));
            }
        }
        for ip in &csr.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let now = now_utc();
        let ca_end = time::OffsetDateTime::from_unix_timestamp(self.summary.not_after)
            .unwrap_or(now + time::Duration::days(1));
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = (now + time::Duration::days(i64::from(valid_days.max(1)))).min(ca_end);
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::from_pem(&self.key_pem)
            .map_err(|e| PkiError::Crypto(format!("cannot load the CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.as_slice()), key)
            .map_err(|e| PkiError::Crypto(format!("cannot use the CA certificate: {e}")))?;
        let cert = params
            .signed_by(&csr.key, &issuer)
            .map_err(|e| PkiError::Crypto(format!("cannot sign: {e}")))?;
        let der = cert.der().to_vec();
        // The certificate must carry exactly the key of the request.
        if summarize(&der)?.spki != csr.spki {
            return Err(PkiError::Crypto(
                "the signed certificate's key differs from the request's (unsupported key encoding)"
                    .into(),
            ));
        }
        Ok(der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(dir: &Path) -> Site {
        Site {
            dir: dir.to_path_buf(),
            config: autoprov_core::SiteConfig::default(),
        }
    }

    fn csr_for(cn: &str) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["phone.example".to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let csr = params.serialize_request(&key).unwrap();
        (csr.der().to_vec(), key)
    }

    #[test]
    fn ca_signs_with_forced_cn() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path());
        assert!(load_ca(&s).unwrap_err().to_string().contains("ca init"));
        let ca = ca_init(&s, false).unwrap();
        assert_eq!(ca.subject_cn, "autoprov Device CA");
        assert!(ca.is_ca);
        assert!(ca_init(&s, false)
            .unwrap_err()
            .to_string()
            .contains("--force"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(t.path().join("ca/autoprov-ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "CA key is private");
        }
        let authority = load_ca(&s).unwrap();
        let (der, _) = csr_for("../../etc/passwd");
        let csr = read_csr(&der, "csr").unwrap();
        assert_eq!(csr.subject_cn, "../../etc/passwd");
        assert_eq!(csr.dns_names, vec!["phone.example"]);
        let cert = authority.sign(&csr, "0090333000af", 30).unwrap();
        let sum = summarize(&cert).unwrap();
        assert_eq!(sum.subject_cn, "0090333000af");
        assert_eq!(sum.issuer_cn, "autoprov Device CA");
        assert!(!sum.is_ca);
        assert!(sum.not_after - sum.not_before <= 31 * 86400);
        // PEM input works as well
        let csr2 = read_csr(csr_pem(&der).as_bytes(), "pem").unwrap();
        assert_eq!(csr2.der, der);
    }

    #[test]
    fn mix_ups_are_named() {
        let (der, key) = csr_for("x");
        // a CSR where a certificate is expected
        let e = read_certs(&der, "upload").unwrap_err().to_string();
        assert!(e.contains("certificate signing request"), "{e}");
        let e = read_certs(csr_pem(&der).as_bytes(), "upload")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CERTIFICATE REQUEST instead of a CERTIFICATE"),
            "{e}"
        );
        // a key or a certificate where a CSR is expected
        let e = read_csr(key.serialize_pem().as_bytes(), "csr")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PRIVATE KEY instead of a CERTIFICATE REQUEST"),
            "{e}"
        );
        let (cert_pem_text, _) = self_signed("x", &["localhost".into()]).unwrap();
        let cert = read_certs(cert_pem_text.as_bytes(), "c").unwrap();
        let e = read_csr(&cert[0], "csr").unwrap_err().to_string();
        assert!(e.contains("it is an X.509 certificate"), "{e}");
        let e = read_csr(b"\x30\x82garbage", "csr").unwrap_err().to_string();
        assert!(e.contains("not DER-encoded"), "{e}");
        let e = read_csr(b"", "csr").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        // a damaged signature
        let mut bad = der.clone();
        let n = bad.len();
        bad[n - 3] ^= 0xff;
        assert!(read_csr(&bad, "csr").is_err());
        let e = read_private_key(cert_pem_text.as_bytes(), "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("CERTIFICATE but no PRIVATE KEY"), "{e}");
    }

    #[test]
    fn fingerprints() {
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }
}
