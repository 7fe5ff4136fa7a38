//! TLS for the HTTPS and MTLS listeners (rustls on aws-lc-rs).
//!
//! * The server certificate comes from `[tls] cert`/`key`. [`ensure_server_cert`] creates a
//!   self-signed one on first use; [`FileCertResolver`] looks at both files on every handshake
//!   and loads them again when they changed, so replaced files are served by new connections
//!   without a restart (a broken replacement is logged and the last good pair kept).
//! * The MTLS listener asks for a client certificate but lets the handshake finish without
//!   one, or with one it does not trust, so that the device can be told why it gets no scripts
//!   and the refusal is recorded ([`AskClientCert`] checks only that the peer holds the key).
//!   The chain is verified after the handshake against `[tls] client_ca` plus the built-in CA
//!   (`[ca] cert`), both reloaded when they change ([`ClientTrust`]), and the result reaches
//!   handlers as a typed [`ClientCert`].
//!
//! * Cipher suites ([`Configs::for_hello`]): AES-128-GCM first (its SHA-256 key schedule
//!   runs on the SHA instructions of current CPUs; AES-256-GCM-SHA384's SHA-384 does not), then
//!   AES-256-GCM, then ChaCha20-Poly1305, unless the client lists ChaCha20 first among the
//!   suites it shares with us: a phone without AES instructions says so that way, and then
//!   its order is followed.
//!
//! Must not decide what a device gets; that is the engine's job with the [`ClientCert`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use autoprov_core::innovaphone::ClientCert;
use autoprov_core::Site;

use crate::fsutil::{atomic_write, atomic_write_private};
use crate::pki::{self, PkiError};

/// Problems with the TLS set-up (not with a single connection).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[tls] {key} '{value}' must be a relative path inside the site")]
    Path { key: &'static str, value: String },
    #[error("server certificate: {0}")]
    Pki(#[from] PkiError),
    #[error("server certificate {cert} exists but its key {key} does not (or the other way round): restore the missing file, or remove both to have a self-signed certificate created")]
    HalfPair { cert: String, key: String },
    #[error("server certificate {cert} and key {key} do not belong together: {why}")]
    Mismatch {
        cert: String,
        key: String,
        why: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The server certificate in use, for the start-up message.
#[derive(Debug, Clone)]
pub struct ServerCertInfo {
    /// `[tls] cert` as configured.
    pub cert: String,
    pub subject_cn: String,
    pub not_after: i64,
    /// SHA-256 fingerprint of the leaf.
    pub fingerprint: String,
    /// Whether this call created it (self-signed).
    pub generated: bool,
}

fn tls_path(site: &Site, key: &'static str, value: &str) -> Result<PathBuf, TlsError> {
    site.path(value).ok_or_else(|| TlsError::Path {
        key,
        value: value.to_string(),
    })
}

/// Make sure the server certificate exists: when neither `[tls] cert` nor `key` is there,
/// create a self-signed certificate (names: `localhost`, the host name, loopback addresses).
/// Then load and check the pair.
pub fn ensure_server_cert(site: &Site) -> Result<ServerCertInfo, TlsError> {
    let t = &site.config.tls;
    let cert_path = tls_path(site, "cert", &t.cert)?;
    let key_path = tls_path(site, "key", &t.key)?;
    let mut generated = false;
    match (cert_path.exists(), key_path.exists()) {
        (false, false) => {
            let host = hostname();
            let mut names = vec!["localhost".to_string()];
            names.extend(host.clone());
            names.extend(["127.0.0.1".to_string(), "::1".to_string()]);
            let cn = format!("autoprov {}", host.as_deref().unwrap_or("server"));
            let (cert_pem, key_pem) = pki::self_signed(&cn, &names)?;
            atomic_write_private(&key_path, key_pem.as_bytes()).map_err(|source| {
                PkiError::Write {
                    path: key_path.clone(),
                    source,
                }
            })?;
            atomic_write(&cert_path, cert_pem.as_bytes()).map_err(|source| PkiError::Write {
                path: cert_path.clone(),
                source,
            })?;
            generated = true;
        }
        (true, true) => {}
        _ => {
            return Err(TlsError::HalfPair {
                cert: t.cert.clone(),
                key: t.key.clone(),
            })
        }
    }
    let provider = pki::provider();
    let ck = load_pair(site, &provider)?;
    let sum = pki::summarize(&ck.cert[0])?;
    Ok(ServerCertInfo {
        cert: t.cert.clone(),
        subject_cn: sum.subject_cn,
        not_after: sum.not_after,
        fingerprint: sum.fingerprint,
        generated,
    })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
        })
}

/// Load `[tls] cert` + `key` into a rustls `CertifiedKey`, checking that they match.
fn load_pair(site: &Site, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let t = &site.config.tls;
    let read = |key: &'static str, value: &str| -> Result<Vec<u8>, TlsError> {
        let p = tls_path(site, key, value)?;
        std::fs::read(&p).map_err(|source| PkiError::Read { path: p, source }.into())
    };
    let certs = pki::read_certs(&read("cert", &t.cert)?, &t.cert)?;
    let key = pki::read_private_key(&read("key", &t.key)?, &t.key)?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::Mismatch {
        cert: t.cert.clone(),
        key: t.key.clone(),
        why: e.to_string(),
    })
}

/// A file's identity for change detection: modification time, length, inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(p: &Option<PathBuf>) -> Stamp {
    let meta = std::fs::metadata(p.as_ref()?).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let ino = 0;
    Some((meta.modified().ok()?, meta.len(), ino))
}

/// Serves `[tls] cert`/`key`, reloading them when they change on disk.
#[derive(Debug)]
pub struct FileCertResolver {
    site: Arc<Site>,
    provider: Arc<CryptoProvider>,
    files: [Option<PathBuf>; 2],
    current: Mutex<(Vec<Stamp>, Arc<CertifiedKey>)>,
}

impl FileCertResolver {
    /// Load the pair now; fails when it is missing or broken.
    pub fn new(site: Arc<Site>, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let t = &site.config.tls;
        let files = [site.path(&t.cert), site.path(&t.key)];
        let stamps = files.iter().map(stamp).collect();
        let ck = Arc::new(load_pair(&site, &provider)?);
        Ok(FileCertResolver {
            site,
            provider,
            files,
            current: Mutex::new((stamps, ck)),
        })
    }

    /// The pair to use now, reloaded first when a file changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamps: Vec<Stamp> = self.files.iter().map(stamp).collect();
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.0 != stamps {
            match load_pair(&self.site, &self.provider) {
                Ok(ck) => {
                    let fp = pki::fingerprint(&ck.cert[0]);
                    tracing::info!(cert = %self.site.config.tls.cert, fingerprint = %fp, "server certificate reloaded");
                    cur.1 = Arc::new(ck);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "new server certificate files unusable, keeping the previous certificate");
                }
            }
            // Remember the stamps either way: a broken pair is reported once, not per handshake.
            cur.0 = stamps;
        }
        cur.1.clone()
    }
}

impl ResolvesServerCert for FileCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The CAs the MTLS listener trusts: `[tls] client_ca` plus the built-in CA (`[ca] cert`),
/// reloaded when those files change.
pub struct ClientTrust {
    site: Arc<Site>,
    provider: Arc<CryptoProvider>,
    files: [Option<PathBuf>; 2],
    current: Mutex<(Vec<Stamp>, Verifier)>,
}

/// A built verifier, or why none could be built.
type Verifier = Result<Arc<dyn ClientCertVerifier>, String>;

impl std::fmt::Debug for ClientTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTrust")
            .field("files", &self.files)
            .finish()
    }
}

impl ClientTrust {
    pub fn new(site: Arc<Site>, provider: Arc<CryptoProvider>) -> ClientTrust {
        let t = &site.config.tls;
        let client_ca = (!t.client_ca.is_empty())
            .then(|| site.path(&t.client_ca))
            .flatten();
        let files = [client_ca, site.path(&site.config.ca.cert)];
        let trust = ClientTrust {
            site,
            provider,
            files,
            current: Mutex::new((Vec::new(), Err(String::new()))),
        };
        let _ = trust.verifier();
        trust
    }

    fn build(&self) -> Verifier {
        let mut roots = RootCertStore::empty();
        let mut problems = Vec::new();
        let t = &self.site.config.tls;
        let sources = [
            (t.client_ca.as_str(), &self.files[0], true),
            (self.site.config.ca.cert.as_str(), &self.files[1], false),
        ];
        for (name, path, required) in sources {
            let Some(path) = path else {
                if !name.is_empty() && required {
                    problems.push(format!("{name} is not a path inside the site"));
                }
                continue;
            };
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => {
                    if required || e.kind() != std::io::ErrorKind::NotFound {
                        problems.push(format!("cannot read {name}: {e}"));
                    }
                    continue;
                }
            };
            match pki::read_certs(&bytes, name) {
                Ok(certs) => {
                    for c in certs {
                        if let Err(e) = roots.add(c) {
                            problems.push(format!("{name}: unusable CA certificate: {e}"));
                        }
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        for p in &problems {
            tracing::warn!(problem = %p, "client CA");
        }
        if roots.is_empty() {
            return Err(format!(
                "no trusted client CA ([tls] client_ca '{}', [ca] cert '{}'{})",
                t.client_ca,
                self.site.config.ca.cert,
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(": {}", problems.join("; "))
                }
            ));
        }
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client CA: {e}"))
    }

    fn verifier(&self) -> Verifier {
        let stamps: Vec<Stamp> = self.files.iter().map(stamp).collect();
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.0 != stamps || cur.0.is_empty() {
            cur.1 = self.build();
            cur.0 = stamps;
        }
        cur.1.clone()
    }

    /// Verify a presented chain now. `Err` says why it is not trusted.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        let v = self.verifier()?;
        v.verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    /// The typed client certificate of a finished handshake (`None`: none presented).
    pub fn client_cert(&self, chain: Option<&[CertificateDer<'_>]>) -> Option<ClientCert> {
        let chain = chain.filter(|c| !c.is_empty())?;
        let (subject_cn, issuer_cn) = match pki::summarize(&chain[0]) {
            Ok(s) => (s.subject_cn, s.issuer_cn),
            Err(_) => (String::new(), String::new()),
        };
        let result = self.verify(chain);
        Some(ClientCert {
            subject_cn,
            issuer_cn,
            verified: result.is_ok(),
            verify_error: result.err(),
        })
    }
}

/// Words for why a certificate is not trusted (as short as Apache's `SSL_CLIENT_VERIFY`).
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid".into()
            }
            CertificateError::UnknownIssuer => "unknown issuer".into(),
            CertificateError::BadSignature => "bad signature".into(),
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::BadEncoding => "unreadable certificate".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "certificate not allowed for client authentication".into()
            }
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// Handshake-time verifier of the MTLS listener: asks for a certificate, accepts any (or none)
/// and checks only the handshake signature, i.e. that the client holds the certificate's key.
/// Trust is decided after the handshake by [`ClientTrust`].
#[derive(Debug)]
pub struct AskClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AskClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a device should send whatever certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Everything the TLS listeners of one server share.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    pub https: Configs,
    pub mtls: Configs,
    pub trust: Arc<ClientTrust>,
}

/// A listener's configuration in its two cipher suite orders (see the module docs).
#[derive(Debug, Clone)]
pub struct Configs {
    /// Our order: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305.
    pub ours: Arc<ServerConfig>,
    /// The client's order.
    pub clients: Arc<ServerConfig>,
}

impl Configs {
    /// The configuration for a client that sent `hello`: the client's order when the first
    /// suite it lists that we support is a ChaCha20 one, ours otherwise.
    pub fn for_hello(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let supported = &self.ours.crypto_provider().cipher_suites;
        let first = hello
            .cipher_suites()
            .iter()
            .find(|c| supported.iter().any(|s| s.suite() == **c));
        if first.is_some_and(|c| is_chacha(*c)) {
            self.clients.clone()
        } else {
            self.ours.clone()
        }
    }
}

fn is_chacha(c: rustls::CipherSuite) -> bool {
    format!("{c:?}").contains("CHACHA20")
}

/// `provider` with its cipher suites in our order (per protocol version, as they were):
/// AES-128-GCM, AES-256-GCM, then the rest (ChaCha20-Poly1305).
fn our_order(provider: &CryptoProvider) -> CryptoProvider {
    let rank = |s: &rustls::SupportedCipherSuite| {
        let name = format!("{:?}", s.suite());
        let version = u8::from(matches!(s, rustls::SupportedCipherSuite::Tls12(_)));
        let cipher = if name.contains("AES_128_GCM") {
            0
        } else if name.contains("AES_256_GCM") {
            1
        } else {
            2
        };
        (version, cipher)
    };
    let mut p = provider.clone();
    p.cipher_suites.sort_by_key(rank);
    p
}

impl TlsSetup {
    /// Create the server certificate if needed ([`ensure_server_cert`]) and build the listener
    /// configurations.
    pub fn new(site: Arc<Site>) -> Result<TlsSetup, TlsError> {
        ensure_server_cert(&site)?;
        let provider = pki::provider();
        let ours = Arc::new(our_order(&provider));
        let resolver = Arc::new(FileCertResolver::new(site.clone(), provider.clone())?);
        let config = |verifier: Option<Arc<dyn ClientCertVerifier>>, in_our_order: bool| {
            let p = if in_our_order {
                ours.clone()
            } else {
                provider.clone()
            };
            let b = ServerConfig::builder_with_provider(p)
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            let b = match verifier {
                Some(v) => b.with_client_cert_verifier(v),
                None => b.with_no_client_auth(),
            };
            let mut c = b.with_cert_resolver(resolver.clone());
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            c.ignore_client_order = in_our_order;
            Ok::<_, TlsError>(Arc::new(c))
        };
        let configs = |verifier: Option<Arc<dyn ClientCertVerifier>>| {
            Ok::<_, TlsError>(Configs {
                ours: config(verifier.clone(), true)?,
                clients: config(verifier, false)?,
            })
        };
        let ask: Arc<dyn ClientCertVerifier> = Arc::new(AskClientCert {
            provider: provider.clone(),
        });
        Ok(TlsSetup {
            https: configs(None)?,
            mtls: configs(Some(ask))?,
            trust: Arc::new(ClientTrust::new(site, provider)),
        })
    }
}
