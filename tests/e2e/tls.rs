//! HTTPS, mutual TLS and the device certificate roll-out, end to end: real TLS handshakes
//! against the real server (HTTP, HTTPS and MTLS listeners on 127.0.0.1), certificates made by
//! the `openssl` command and by the built-in CA, clients `curl` and a rustls client written
//! here, a simulated innovaphone device that follows the certificate commands, and the
//! operator's `autoprov ca` / `autoprov certs` commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use autoprov_core::{DeviceState, Site};
use autoprov_server::{bind_listeners, AppState, ListenSpec, ListenerKind};
use autoprov_store::Store;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{percent_decode, write_script};

const SN: &str = "00-90-33-30-00-af";
const HWID: &str = "IP232-30-00-af";
const CN: &str = "0090333000af";
const DEV: &str = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";

fn autoprov() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoprov"))
}

// ---------------------------------------------------------------------------------------
// Certificates made with the openssl command

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth,serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca]
default_ca = testca
[testca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = anything
unique_subject = no
[anything]
commonName = supplied
";

/// A folder of certificates made with `openssl`: `<name>.key` and `<name>.pem` each.
struct Openssl {
    dir: PathBuf,
}

impl Openssl {
    fn new(dir: &Path) -> Openssl {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("t.cnf"), OPENSSL_CNF).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "01\n").unwrap();
        Openssl {
            dir: dir.to_path_buf(),
        }
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("the openssl command is installed (test.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A CA `name` with common name `cn`.
    fn ca(&self, name: &str, cn: &str) -> PathBuf {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        self.run(&[
            "req",
            "-x509",
            "-new",
            "-config",
            "t.cnf",
            "-extensions",
            "ca_ext",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "30",
            "-subj",
            &format!("/CN={cn}"),
        ]);
        self.path(&pem)
    }

    /// A key and a CSR (PEM) for `cn`.
    fn csr(&self, name: &str, cn: &str) {
        self.run(&[
            "req",
            "-new",
            "-config",
            "t.cnf",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={}", cn.replace('/', "\\/")),
        ]);
    }

    /// Sign `<name>.csr` with CA `ca` into `<name>.pem`.
    fn sign(&self, name: &str, ca: &str) -> PathBuf {
        self.run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-extfile",
            "t.cnf",
            "-extensions",
            "leaf_ext",
        ]);
        self.path(&format!("{name}.pem"))
    }

    /// A device certificate `name` for `cn` issued by CA `ca`.
    fn leaf(&self, name: &str, cn: &str, ca: &str) -> PathBuf {
        self.csr(name, cn);
        self.sign(name, ca)
    }

    /// A device certificate that expired in 2020.
    fn expired_leaf(&self, name: &str, cn: &str, ca: &str) -> PathBuf {
        self.csr(name, cn);
        self.run(&[
            "ca",
            "-batch",
            "-config",
            "t.cnf",
            "-name",
            "testca",
            "-cert",
            &format!("{ca}.pem"),
            "-keyfile",
            &format!("{ca}.key"),
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{name}.pem"),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
            "-extfile",
            "t.cnf",
            "-extensions",
            "leaf_ext",
            "-notext",
        ]);
        self.path(&format!("{name}.pem"))
    }

    /// `<name>.csr` as DER.
    fn csr_der(&self, name: &str) -> Vec<u8> {
        self.run(&[
            "req",
            "-in",
            &format!("{name}.csr"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.csr.der"),
        ]);
        std::fs::read(self.path(&format!("{name}.csr.der"))).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// The server with all three listeners

struct Ports {
    http: u16,
    https: u16,
    mtls: u16,
}

struct TlsApp {
    ports: Ports,
    dir: tempfile::TempDir,
    store: Store,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TlsApp {
    /// Bind HTTP, HTTPS and MTLS on ephemeral ports, write the site (`toml` may use the
    /// ports), let `prepare` add files, then serve.
    async fn spawn(toml: impl FnOnce(&Ports) -> String, prepare: impl FnOnce(&Path)) -> TlsApp {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let specs = [ListenerKind::Http, ListenerKind::Https, ListenerKind::Mtls]
            .map(|kind| ListenSpec { addr: any, kind });
        let bound = bind_listeners(&specs).await.expect("bind");
        let a = bound.local_addrs();
        let ports = Ports {
            http: a[0].port(),
            https: a[1].port(),
            mtls: a[2].port(),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("autoprov.toml"), toml(&ports)).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        write_script(
            dir.path(),
            "scripts/update-phone-default.txt",
            "config add CMD0 /user admin,s3cret\n",
            3600,
        );
        prepare(dir.path());
        let site = Site::load(dir.path()).expect("site loads");
        let db = crate::helpers::test_db_location(dir.path(), &site).await;
        let store = crate::helpers::open_server_store(&site, &db).await;
        let state = AppState::new(site, store.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bound.run(state, async move {
            let _ = rx.await;
        }));
        let app = TlsApp {
            ports,
            dir,
            store,
            _stop: tx,
        };
        app.wait_for_server_cert().await;
        app
    }

    fn site(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The TLS listeners create the self-signed certificate as they start.
    async fn wait_for_server_cert(&self) {
        for _ in 0..200 {
            if self.site().join("tls/server.key").exists()
                && self.site().join("tls/server.crt").exists()
            {
                // and the listener answers
                if tokio::net::TcpStream::connect(("127.0.0.1", self.ports.https))
                    .await
                    .is_ok()
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("server certificate not created");
    }

    fn server_ca(&self) -> PathBuf {
        self.site().join("tls/server.crt")
    }

    async fn state(&self) -> DeviceState {
        self.store.load(SN).await.unwrap().expect("device state")
    }

    /// Every message of the device's log.
    async fn all_msgs(&self) -> Vec<String> {
        let st = self.state().await;
        st.msgs.iter().map(|m| m.msg.to_string()).collect()
    }

    /// The device's messages since (and including) its last poll.
    async fn last_msgs(&self) -> Vec<String> {
        let st = self.state().await;
        let start = st.msgs.iter().rposition(|m| m.msg.is_empty()).unwrap_or(0);
        st.msgs[start..].iter().map(|m| m.msg.to_string()).collect()
    }
}

/// `curl` with `args`; returns the HTTP status (0 when the request failed) and the body (or
/// curl's error).
async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code: u16 = code.trim().parse().unwrap_or(0);
    if code == 0 {
        return (0, String::from_utf8_lossy(&out.stderr).into_owned());
    }
    (code, body.to_string())
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// A rustls client

struct Reply {
    status: u16,
    body: String,
    /// The server's certificate chain.
    server_certs: Vec<CertificateDer<'static>>,
}

/// One HTTP/1.1 request over TLS to 127.0.0.1:`port`, trusting `server_ca`, presenting
/// `client` (certificate PEM, key PEM) when given.
async fn tls_request(
    port: u16,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    server_ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Reply, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(server_ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| e.to_string())?
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let server_certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: innovaphone-IP232/137640\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(body).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    if let Err(e) = tls.read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(e.to_string());
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {text}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Reply {
        status,
        body,
        server_certs,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------
// Trust decisions with openssl-made certificates, curl and rustls

fn trust_toml(ports: &Ports) -> String {
    format!(
        "[master]\ninfo = \"\"\n\n[status]\nenabled = true\n\n[times]\ngrace = 0\nforcehttps = true\nforcetrust = true\nhttpsport = {}\n\n[tls]\nclient_ca = \"trust/clients.pem\"\n\n[customcerts]\ncaname = \"Test Factory CA\"\n",
        ports.mtls
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_trusts_only_matching_certificates_from_listed_cas() {
    let work = tempfile::tempdir().unwrap();
    let ossl = Openssl::new(work.path());
    let factory = ossl.ca("factory", "Test Factory CA");
    let other = ossl.ca("other", "Other Trusted CA");
    ossl.ca("impostor", "Test Factory CA");
    ossl.ca("rogue", "Rogue CA");
    let good = ossl.leaf("good", CN, "factory");
    let by_hwid = ossl.leaf("hwid", HWID, "factory");
    let mismatch = ossl.leaf("mismatch", "IP232-99-99-99", "factory");
    let rogue = ossl.leaf("roguedev", CN, "rogue");
    let impostor = ossl.leaf("impostordev", CN, "impostor");
    let unlisted = ossl.leaf("unlisted", CN, "other");
    let expired = ossl.expired_leaf("expired", CN, "factory");
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(&factory).unwrap(),
        std::fs::read_to_string(&other).unwrap()
    );
    let app = TlsApp::spawn(trust_toml, |site| {
        std::fs::create_dir_all(site.join("trust")).unwrap();
        std::fs::write(site.join("trust/clients.pem"), &bundle).unwrap();
    })
    .await;
    let ca = app.server_ca();
    let mtls_url = format!("https://127.0.0.1:{}/update.php?{DEV}", app.ports.mtls);
    let key = |name: &str| ossl.path(&format!("{name}.key"));

    // curl with a certificate whose CN is the serial without dashes: scripts.
    let (s, body) = curl(&[
        "--cacert",
        p(&ca),
        "--cert",
        p(&good),
        "--key",
        p(&key("good")),
        &mtls_url,
    ])
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("# good certificate(CN='0090333000af', ISSUER='Test Factory CA')\r\n"),
        "{body}"
    );
    assert!(
        body.contains("config add CMD0 /user admin,s3cret"),
        "{body}"
    );

    // The rustls client with a certificate named after the hwid: scripts.
    let r = tls_request(
        app.ports.mtls,
        "GET",
        &format!("/update.php?{DEV}"),
        b"",
        &ca,
        Some((&by_hwid, &key("hwid"))),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("# good certificate(CN='IP232-30-00-af', ISSUER='Test Factory CA')"),
        "{}",
        r.body
    );
    assert!(r.body.contains("# end of all scripts"));

    // Everything else: no scripts, the reason in the answer and in the device's messages.
    type Case<'a> = (&'a str, Option<(PathBuf, PathBuf)>, String);
    let cases: Vec<Case> = vec![
        (
            "CN of another device",
            Some((mismatch.clone(), key("mismatch"))),
            "Device claims to be 'IP232-30-00-af / 0090333000af' but identifies as 'IP232-99-99-99' by TLS".into(),
        ),
        (
            "issuer not trusted",
            Some((rogue.clone(), key("roguedev"))),
            "TLS certificate (0090333000af) not trusted -- FAILED:unknown issuer".into(),
        ),
        (
            "issuer with a trusted name but another key",
            Some((impostor.clone(), key("impostordev"))),
            "TLS certificate (0090333000af) not trusted -- FAILED:bad signature".into(),
        ),
        (
            "expired",
            Some((expired.clone(), key("expired"))),
            "TLS certificate (0090333000af) not trusted -- FAILED:certificate expired".into(),
        ),
        (
            "trusted CA not listed in caname",
            Some((unlisted.clone(), key("unlisted"))),
            "TLS certificate issuer (Other Trusted CA) not trusted for TLS certificate (0090333000af) -- SUCCESS".into(),
        ),
        (
            "no certificate",
            None,
            "cannot verify CN with HTTPS: SSL_CLIENT_S_DN_CN not present - fix web server configuration or use MTLS-enabled port!".into(),
        ),
    ];
    for (i, (what, cert, why)) in cases.iter().enumerate() {
        // alternate between curl and the rustls client
        let body = if i % 2 == 0 {
            let mut args = vec!["--cacert".to_string(), p(&ca).to_string()];
            if let Some((c, k)) = cert {
                args.extend(["--cert".into(), p(c).into(), "--key".into(), p(k).into()]);
            }
            args.push(mtls_url.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (s, body) = curl(&args).await;
            assert_eq!(s, 200, "{what}: {body}");
            body
        } else {
            let client = cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            tls_request(
                app.ports.mtls,
                "GET",
                &format!("/update.php?{DEV}"),
                b"",
                &ca,
                client,
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .body
        };
        assert!(body.contains(&format!("# {why}\r\n")), "{what}: {body}");
        assert!(!body.contains("# begin script"), "{what}: {body}");
        assert!(!body.contains("admin,s3cret"), "{what}: {body}");
        let msgs = app.last_msgs().await;
        assert!(msgs.iter().any(|m| m == why), "{what}: {msgs:?}");
    }

    // Plain HTTP, and HTTPS on the port without client certificates: switched to the MTLS
    // port, no scripts, recorded.
    let (s, body) = curl(&[&format!(
        "http://127.0.0.1:{}/update.php?{DEV}",
        app.ports.http
    )])
    .await;
    assert_eq!(s, 200);
    let mtls = app.ports.mtls;
    assert!(body.contains(&format!("# using HTTP and 'forcehttps' is set or wrong port () -> need to switch to HTTPS on port {mtls}\r\n")), "{body}");
    assert!(
        body.contains(&format!(
            "config add UP1 /url https%3A%2F%2F127.0.0.1%3A{mtls}%2Fupdate.php%3F"
        )),
        "{body}"
    );
    assert!(!body.contains("# begin script"), "{body}");
    assert!(app
        .last_msgs()
        .await
        .iter()
        .any(|m| m == "forcehttps - currently NOT using HTTPS on port , new polling: 5"));
    let (s, body) = curl(&[
        "--cacert",
        p(&ca),
        "--cert",
        p(&good),
        "--key",
        p(&key("good")),
        &format!("https://127.0.0.1:{}/update.php?{DEV}", app.ports.https),
    ])
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains(&format!(
            "wrong port ({}) -> need to switch to HTTPS on port {mtls}",
            app.ports.https
        )),
        "{body}"
    );
    assert!(!body.contains("# begin script"), "{body}");
    let https = app.ports.https;
    assert!(app.last_msgs().await.iter().any(
        |m| *m == format!("forcehttps - currently using HTTPS on port {https}, new polling: 5")
    ));
}

// ---------------------------------------------------------------------------------------
// Cipher suites: AES-128-GCM first, unless the client puts ChaCha20 first

/// The cipher suite `openssl s_client` negotiates with `args` (`-ciphersuites ...` for TLS
/// 1.3, `-tls1_2 -cipher ...` for TLS 1.2).
async fn negotiated(port: u16, args: &[&str]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let mut all = vec!["s_client", "-connect", connect.as_str()];
    all.extend_from_slice(args);
    let out = tokio::process::Command::new("openssl")
        .args(&all)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.split_once(", Cipher is ")
                .map(|(_, c)| c.trim().to_string())
        })
        .unwrap_or_else(|| format!("no cipher: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cipher_suites_prefer_aes128_unless_the_client_prefers_chacha() {
    let app = TlsApp::spawn(|_| "[master]\ninfo = \"\"\n".to_string(), |_| {}).await;
    for port in [app.ports.https, app.ports.mtls] {
        // OpenSSL's own order (AES-256-GCM first): ours wins
        assert_eq!(negotiated(port, &[]).await, "TLS_AES_128_GCM_SHA256");
        let tls13 = |suites: &'static str| ["-ciphersuites", suites];
        assert_eq!(
            negotiated(
                port,
                &tls13(
                    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
                )
            )
            .await,
            "TLS_AES_128_GCM_SHA256"
        );
        // a client without AES instructions lists ChaCha20 first: its order is followed
        assert_eq!(
            negotiated(
                port,
                &tls13("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256")
            )
            .await,
            "TLS_CHACHA20_POLY1305_SHA256"
        );
        // only what the client offers is chosen
        assert_eq!(
            negotiated(
                port,
                &tls13("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
            )
            .await,
            "TLS_AES_256_GCM_SHA384"
        );
        // TLS 1.2 (the created certificate is RSA)
        let tls12 = |suites: &'static str| ["-tls1_2", "-cipher", suites];
        assert_eq!(
            negotiated(
                port,
                &tls12("ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256")
            )
            .await,
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
        assert_eq!(
            negotiated(
                port,
                &tls12("ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256")
            )
            .await,
            "ECDHE-RSA-CHACHA20-POLY1305"
        );
    }
    // and the connection serves requests as before
    let r = tls_request(
        app.ports.https,
        "GET",
        "/healthz",
        b"",
        &app.server_ca(),
        None,
    )
    .await
    .expect("request over HTTPS");
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------------
// Server certificate: created on first start, replaced files served without a restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_is_created_and_reloaded_without_restart() {
    let app = TlsApp::spawn(|_| "[master]\ninfo = \"\"\n".to_string(), |_| {}).await;
    let created = std::fs::read(app.server_ca()).unwrap();
    let created_der = CertificateDer::pem_slice_iter(&created)
        .next()
        .unwrap()
        .unwrap();
    let r = tls_request(
        app.ports.https,
        "GET",
        "/healthz",
        b"",
        &app.server_ca(),
        None,
    )
    .await
    .expect("the self-signed certificate verifies for 127.0.0.1");
    assert_eq!(r.status, 200);
    assert_eq!(r.server_certs[0], created_der);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.site().join("tls/server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
    }

    // Replace the pair with one made by openssl (a server certificate for 127.0.0.1).
    let work = tempfile::tempdir().unwrap();
    let ossl = Openssl::new(work.path());
    ossl.ca("srvca", "Server Test CA");
    ossl.csr("srv", "127.0.0.1");
    std::fs::write(
        ossl.path("san.cnf"),
        format!("{OPENSSL_CNF}[srv_ext]\nsubjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n"),
    )
    .unwrap();
    ossl.run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "srvca.pem",
        "-CAkey",
        "srvca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "30",
        "-extfile",
        "san.cnf",
        "-extensions",
        "srv_ext",
    ]);
    std::fs::copy(ossl.path("srv.key"), app.site().join("tls/server.key")).unwrap();
    std::fs::copy(ossl.path("srv.pem"), app.site().join("tls/server.crt")).unwrap();
    let new_der = CertificateDer::pem_file_iter(ossl.path("srv.pem"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();

    // New connections get the new certificate, for rustls and for curl.
    let r = tls_request(
        app.ports.https,
        "GET",
        "/healthz",
        b"",
        &ossl.path("srvca.pem"),
        None,
    )
    .await
    .expect("new certificate served");
    assert_eq!(r.server_certs[0], new_der);
    let (s, body) = curl(&[
        "--cacert",
        p(&ossl.path("srvca.pem")),
        &format!("https://127.0.0.1:{}/healthz", app.ports.mtls),
    ])
    .await;
    assert_eq!((s, body.as_str()), (200, "ok"));

    // A broken replacement is not used: the last good certificate stays.
    std::fs::write(
        app.site().join("tls/server.crt"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let r = tls_request(
        app.ports.https,
        "GET",
        "/healthz",
        b"",
        &ossl.path("srvca.pem"),
        None,
    )
    .await
    .expect("last good certificate still served");
    assert_eq!(r.server_certs[0], new_der);
}

#[test]
fn serve_prints_the_fingerprint_of_the_created_certificate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autoprov.toml"), "[master]\ninfo = \"\"\n").unwrap();
    let mut child = autoprov()
        .args(["serve", "--site"])
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--mtls",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            lines.push(line.trim_end().to_string());
            line.clear();
            if lines
                .iter()
                .filter(|l| l.contains("set the update URL"))
                .count()
                == 3
            {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(
        text.contains("autoprov: created a self-signed server certificate tls/server.crt"),
        "{text}"
    );
    assert!(
        text.contains("(HTTPS)") && text.contains("(MTLS)"),
        "{text}"
    );
    assert!(
        text.contains("set the update URL to https://127.0.0.1:"),
        "{text}"
    );
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(dir.path().join("tls/server.crt"))
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&out.stdout);
    let fp = fp.trim().rsplit('=').next().unwrap();
    assert!(
        text.contains(&format!("SHA-256 fingerprint {fp}")),
        "{text}\nopenssl: {fp}"
    );
}

// ---------------------------------------------------------------------------------------
// X-Forwarded-For only from trusted proxies; MTLS through a proxy is refused

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_only_from_trusted_proxies() {
    let work = tempfile::tempdir().unwrap();
    let ossl = Openssl::new(work.path());
    let factory = ossl.ca("factory", "Test Factory CA");
    let good = ossl.leaf("good", CN, "factory");
    let key = ossl.path("good.key");
    for trusted in [false, true] {
        let factory = factory.clone();
        let app = TlsApp::spawn(
            |ports| {
                let mut t = trust_toml(ports);
                if trusted {
                    t = t.replace(
                        "[tls]\n",
                        "[tls]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
                    );
                }
                t
            },
            |site| {
                std::fs::create_dir_all(site.join("trust")).unwrap();
                std::fs::copy(&factory, site.join("trust/clients.pem")).unwrap();
            },
        )
        .await;
        let url = format!("https://127.0.0.1:{}/update.php?{DEV}", app.ports.mtls);
        let (s, body) = curl(&[
            "--cacert",
            p(&app.server_ca()),
            "--cert",
            p(&good),
            "--key",
            p(&key),
            "-H",
            "X-Forwarded-For: 203.0.113.7, 10.1.1.1",
            &url,
        ])
        .await;
        assert_eq!(s, 200, "{body}");
        let st = app.state().await;
        if trusted {
            assert!(body.contains("# cannot verify the device certificate through a reverse proxy (203.0.113.7 via 127.0.0.1): MTLS needs a direct connection - let devices reach the MTLS port without the proxy\r\n"), "{body}");
            assert!(!body.contains("# begin script"));
            assert_eq!(st.device.ip.as_deref(), Some("203.0.113.7"));
            assert!(st.device.rp);
            assert_eq!(st.device.proxy.as_deref(), Some("127.0.0.1"));
            assert!(app
                .last_msgs()
                .await
                .iter()
                .any(|m| m
                    .starts_with("cannot verify the device certificate through a reverse proxy")));
        } else {
            // The header of an unknown peer is ignored: the device counts as directly connected.
            assert!(
                body.contains("# good certificate(CN='0090333000af'"),
                "{body}"
            );
            assert_eq!(st.device.ip.as_deref(), Some("127.0.0.1"));
            assert!(!st.device.rp);
            assert_eq!(st.device.proxy, None);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The certificate roll-out with a simulated device

/// An innovaphone device as far as certificates go: it polls over TLS with its current
/// certificate, runs the query and vardump uploads it is told to, creates a key and CSR on
/// `servercert-create` (with openssl), and installs `X509/REQUESTRESPONSE`.
struct CertDevice {
    url: String,
    cert: PathBuf,
    key: PathBuf,
    ossl: Openssl,
    /// The CSR on the device (DER) and its key.
    csr: Option<(Vec<u8>, PathBuf)>,
    /// Whether the device lists a CSR in its certificate query.
    has_request: bool,
    /// What `X509/REQUESTRESPONSE/0000x` brought: leaf first.
    response: Vec<Vec<u8>>,
    server_ca: PathBuf,
    generation: u32,
    /// Every command line the device ran, for the test to look at.
    log: Vec<String>,
}

impl CertDevice {
    fn new(app: &TlsApp, ossl: Openssl, cert: PathBuf, key: PathBuf) -> CertDevice {
        CertDevice {
            url: format!(
                "https://127.0.0.1:{}/update.php?type=#t&sn=#m&hwid=#h&ip=#i",
                app.ports.mtls
            ),
            cert,
            key,
            ossl,
            csr: None,
            has_request: false,
            response: Vec::new(),
            server_ca: app.server_ca(),
            generation: 0,
            log: Vec::new(),
        }
    }

    fn expand(u: &str) -> String {
        u.replace("#t", "IP232")
            .replace("#m", SN)
            .replace("#h", HWID)
            .replace("#i", "10.0.0.5")
    }

    /// `https://127.0.0.1:PORT/path?query` → (port, path?query).
    fn split(u: &str) -> (u16, String) {
        let rest = u
            .strip_prefix("https://127.0.0.1:")
            .expect("an https URL to this server");
        let (port, pq) = rest.split_once('/').unwrap();
        (port.parse().unwrap(), format!("/{pq}"))
    }

    async fn request(&self, method: &str, url: &str, body: &[u8]) -> Reply {
        let (port, pq) = Self::split(&Self::expand(url));
        tls_request(
            port,
            method,
            &pq,
            body,
            &self.server_ca,
            Some((&self.cert, &self.key)),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    fn certificates_info(&self) -> String {
        let der = CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let s = autoprov_server::pki::summarize(&der).unwrap();
        let t = autoprov_server::rollout::format_time;
        format!(
            "<info><servercert><certificate subject_cn=\"{}\" issuer_cn=\"{}\" not_before=\"{}\" not_after=\"{}\"/></servercert>{}</info>",
            s.subject_cn,
            s.issuer_cn,
            t(s.not_before),
            t(s.not_after),
            if self.has_request { "<requests><request/></requests>" } else { "" }
        )
    }

    /// Poll once and run the script. Returns it.
    async fn poll(&mut self) -> String {
        let url = self.url.clone();
        let r = self.request("GET", &url, b"").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let script = r.body;
        for line in script.split("\r\n") {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.log.push(line.to_string());
            if let Some(enc) = line.strip_prefix("config add UP1 /url ") {
                self.url = percent_decode(enc);
            } else if let Some(rest) = line.strip_prefix("mod cmd UP0 scfg ") {
                let target = rest.split(' ').next().unwrap().to_string();
                let body = if target.contains("mode=query") && target.contains("id=certificates") {
                    self.certificates_info().into_bytes()
                } else if target.contains("mode=vardump") && target.contains("var=X509/REQUEST&") {
                    let hex: String = self
                        .csr
                        .as_ref()
                        .map(|(d, _)| d.iter().map(|b| format!("{b:02x}")).collect())
                        .unwrap_or_default();
                    format!("X509/REQUEST pb {hex}\r\n").into_bytes()
                } else {
                    Vec::new() // no X509/REQUESTERROR on this device
                };
                let r = self.request("PUT", &target, &body).await;
                self.log.push(format!(
                    "PUT -> {} {}",
                    r.status,
                    r.body.lines().last().unwrap_or("")
                ));
            } else if line.starts_with("mod cmd X509 servercert-create ") {
                let cn = line
                    .split(" /dn-cn ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .map(percent_decode)
                    .unwrap();
                self.generation += 1;
                let name = format!("csr{}", self.generation);
                self.ossl.csr(&name, &cn);
                let der = self.ossl.csr_der(&name);
                self.csr = Some((der, self.ossl.path(&format!("{name}.key"))));
                self.has_request = true;
            } else if let Some(rest) = line.strip_prefix("vars create X509/REQUESTRESPONSE/") {
                let (index, hex) = rest.split_once(" pb ").unwrap();
                let der: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                if index == "00000" {
                    self.response.clear();
                }
                self.response.push(der);
            } else if line == "vars del X509/REQUEST " {
                self.has_request = false;
            }
        }
        // The device installs a response at the end of the script.
        if let (Some(leaf), Some((_, key))) = (self.response.first(), self.csr.as_ref()) {
            let name = format!("installed{}.pem", self.generation);
            std::fs::write(self.ossl.path(&name), autoprov_server::pki::cert_pem(leaf)).unwrap();
            self.cert = self.ossl.path(&name);
            self.key = key.clone();
            self.csr = None;
        }
        script
    }
}

fn rollout_toml(ports: &Ports, extra: &str) -> String {
    format!(
        "[master]\ninfo = \"\"\n\n[status]\nenabled = true\n\n[times]\ngrace = 0\nforcehttps = true\nforcetrust = true\nhttpsport = {}\n\n[tls]\nclient_ca = \"trust/factory.pem\"\n\n[customcerts]\ndir = \"certs\"\ncaname = \"autoprov Device CA\"\n\n[[queries.query]]\nid = \"certificates\"\ncmd = \"mod cmd X509 xml-info\"\napplies = [{{ value = \"*\" }}]\n\n{extra}",
        ports.mtls
    )
}

/// Run the device until it gets scripts; `on_poll` may act between polls (the operator).
async fn drive(dev: &mut CertDevice, mut on_poll: impl FnMut(&str)) -> Vec<String> {
    let mut scripts = Vec::new();
    for _ in 0..16 {
        let s = dev.poll().await;
        on_poll(&s);
        let done = s.contains("# end of all scripts");
        scripts.push(s);
        if done {
            return scripts;
        }
    }
    panic!(
        "the device never got its scripts:\n{}",
        scripts.join("\n=====\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_round_trip_with_the_builtin_ca() {
    let work = tempfile::tempdir().unwrap();
    let ossl = Openssl::new(work.path());
    let factory = ossl.ca("factory", "Test Factory CA");
    let cert = ossl.leaf("device", CN, "factory");
    let app = TlsApp::spawn(
        |ports| rollout_toml(ports, ""),
        |site| {
            std::fs::create_dir_all(site.join("trust")).unwrap();
            std::fs::copy(&factory, site.join("trust/factory.pem")).unwrap();
        },
    )
    .await;
    // The CA is created while the server runs; the MTLS listener picks it up.
    let out = autoprov()
        .args(["ca", "init", "--site"])
        .arg(app.site())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("created the CA 'autoprov Device CA'"),
        "{said}"
    );

    let site = app.site();
    let key = ossl.path("device.key");
    let mut dev = CertDevice::new(&app, ossl, cert, key);
    let mut signed = false;
    let mut listed = String::new();
    let mut downloaded = Vec::new();
    let scripts = drive(&mut dev, |s| {
        if s.contains("signing request must be processed by CA (ongoing)") && !signed {
            // The operator looks at the pending CSR and approves it.
            let out = autoprov()
                .args(["certs", "list", "--site"])
                .arg(&site)
                .output()
                .unwrap();
            listed = String::from_utf8_lossy(&out.stdout).into_owned();
            let out = autoprov()
                .args(["certs", "download", "--der", "--sn", SN, "--site"])
                .arg(&site)
                .output()
                .unwrap();
            downloaded = out.stdout;
            let out = autoprov()
                .args(["ca", "sign", "--sn", SN, "--site"])
                .arg(&site)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                said.contains(&format!(
                    "signed the CSR of {SN}: CN '{CN}', issuer 'autoprov Device CA'"
                )),
                "{said}"
            );
            signed = true;
        }
    })
    .await;
    let all = scripts.join("\n=====\n");
    assert!(signed, "{all}");
    // The steps, in order.
    let pos = |needle: &str| {
        all.find(needle)
            .unwrap_or_else(|| panic!("missing '{needle}' in\n{all}"))
    };
    let steps = [
        "# certificates: we dont know anything about the current certificate state",
        "# certificates: CN 0090333000af: invalid issuer: Test Factory CA: not in autoprov Device CA (,) ",
        "mod cmd X509 servercert-create /cmd servercert-create /redirect /target device /type Signing%20request  /key 2048-bit /signature SH256 /dn-cn 0090333000af ",
        "# need up-to-date query state, skipping update script, doing queries only",
        "# certificates: need to download CSR from device",
        "# certificates: signing request must be processed by CA (ongoing)",
        &format!("# certificates: there is an uploaded signed CSR (certs/{SN}-signedrequest.cer)"),
        "# certificates: upload CA certificate #1 (certs/CAkey-autoprov.pem)",
        "# certificates: OK ",
        "# certificates: removing CSR from device",
        "# good certificate(CN='0090333000af', ISSUER='autoprov Device CA')",
        "# end of all scripts",
    ];
    for w in steps.windows(2) {
        assert!(
            pos(w[0]) < pos(w[1]),
            "'{}' before '{}' in\n{all}",
            w[0],
            w[1]
        );
    }
    assert!(
        listed.contains(SN) && listed.contains(&format!("pending (asks for CN '{CN}')")),
        "{listed}"
    );
    assert_eq!(
        downloaded,
        dev.ossl.csr_der("csr1"),
        "the operator downloads the device's CSR"
    );

    // The device now holds a certificate of the built-in CA with its chain.
    let ca_der = CertificateDer::pem_file_iter(app.site().join("certs/CAkey-autoprov.pem"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(dev.response.len(), 2);
    assert_eq!(dev.response[1], ca_der.to_vec());
    let leaf = autoprov_server::pki::summarize(&dev.response[0]).unwrap();
    assert_eq!(
        (leaf.subject_cn.as_str(), leaf.issuer_cn.as_str()),
        (CN, "autoprov Device CA")
    );
    // The roll-out files are gone, the state says why.
    for f in ["request.p10.der", "request.p10.pem", "signedrequest.cer"] {
        assert!(
            !app.site().join(format!("certs/{SN}-{f}")).exists(),
            "{f} removed"
        );
    }
    assert_eq!(app.state().await.device.certstat.as_deref(), Some("OK"));

    // curl with the new certificate on the MTLS port: trusted as well.
    let installed = dev.cert.clone();
    let (s, body) = curl(&[
        "--cacert",
        p(&app.server_ca()),
        "--cert",
        p(&installed),
        "--key",
        p(&dev.key),
        &CertDevice::expand(&dev.url),
    ])
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("# good certificate(CN='0090333000af', ISSUER='autoprov Device CA')"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_is_signed_automatically_for_devices_trusted_by_a_listed_ca() {
    let work = tempfile::tempdir().unwrap();
    let ossl = Openssl::new(work.path());
    let factory = ossl.ca("factory", "Test Factory CA");
    let cert = ossl.leaf("device", CN, "factory");
    let app = TlsApp::spawn(
        |ports| rollout_toml(ports, "[ca]\nauto_sign_for = [\"Test Factory CA\"]\n"),
        |site| {
            std::fs::create_dir_all(site.join("trust")).unwrap();
            std::fs::copy(&factory, site.join("trust/factory.pem")).unwrap();
        },
    )
    .await;
    let out = autoprov()
        .args(["ca", "init", "--site"])
        .arg(app.site())
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = ossl.path("device.key");
    let mut dev = CertDevice::new(&app, ossl, cert, key);
    let scripts = drive(&mut dev, |_| {}).await;
    let all = scripts.join("\n=====\n");
    assert!(
        !all.contains("signing request must be processed by CA"),
        "no operator needed:\n{all}"
    );
    assert!(
        all.contains("# good certificate(CN='0090333000af', ISSUER='autoprov Device CA')"),
        "{all}"
    );
    let msgs = app.all_msgs().await;
    assert!(
        msgs.iter().any(|m| m.starts_with(
            "certificates: CSR signed automatically by the built-in CA (CN '0090333000af'"
        )),
        "{msgs:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The operator's upload (CLI and mode=upload) and bad input

/// A site with roll-out on and a CSR from the device (made by openssl) already fetched.
async fn app_with_pending_csr(ossl: &Openssl, csr_name: &str, cn: &str) -> TlsApp {
    ossl.csr(csr_name, cn);
    let der = ossl.csr_der(csr_name);
    let app = TlsApp::spawn(
        |ports| rollout_toml(ports, "").replace("client_ca = \"trust/factory.pem\"\n", ""),
        |_| {},
    )
    .await;
    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    let (s, body) = curl(&[
        "-X", "PUT", "--data-binary", &format!("X509/REQUEST pb {hex}\r\n"),
        &format!(
            "http://127.0.0.1:{}/update.php?mode=vardump&sn={SN}&var=X509/REQUEST&file=certs%2F{SN}-request.p10.der&proc=var2bin&postproc=createPemFromDer",
            app.ports.http
        ),
    ])
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(!body.contains("warning"), "{body}");
    app
}

fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_certificates_from_another_ca_are_checked_and_stored() {
    let work = tempfile::tempdir().unwrap();
    let ossl = Openssl::new(work.path());
    ossl.ca("corp", "Corp CA");
    let app = app_with_pending_csr(&ossl, "dev", CN).await;
    let signed = ossl.sign("dev", "corp");
    let upload = |file: &Path| {
        autoprov()
            .args(["certs", "upload", "--sn", SN, "--site"])
            .arg(app.site())
            .arg(file)
            .output()
            .unwrap()
    };

    // Mix-ups are refused with what the file really is.
    let other = ossl.leaf("other", CN, "corp");
    for (file, why) in [
        (
            ossl.path("dev.csr"),
            "is PEM holding CERTIFICATE REQUEST instead of a CERTIFICATE",
        ),
        (
            ossl.path("dev.key"),
            "is PEM holding PRIVATE KEY instead of a CERTIFICATE",
        ),
        (
            other.clone(),
            "is not for the key of 00-90-33-30-00-af's pending CSR",
        ),
        (ossl.path("corp.pem"), "is a CA certificate"),
    ] {
        let out = upload(&file);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{}: {err}", file.display());
    }
    let der_csr = ossl.path("dev.csr.der");
    let out = upload(&der_csr);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("it is a certificate signing request"), "{err}");
    assert!(!app
        .site()
        .join(format!("certs/{SN}-signedrequest.cer"))
        .exists());

    // DER works as well as PEM.
    ossl.run(&[
        "x509", "-in", "dev.pem", "-outform", "DER", "-out", "dev.der",
    ]);
    let out = upload(&ossl.path("dev.der"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("issuer 'Corp CA'"));
    let out = autoprov()
        .args(["certs", "list", "--site"])
        .arg(app.site())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("waiting for the device (CN '0090333000af', issuer 'Corp CA'"));
    std::fs::remove_file(app.site().join(format!("certs/{SN}-signedrequest.cer"))).unwrap();

    // mode=upload: the admin form's multipart POST, answered 303 to `proceed`.
    let base = format!(
        "http://127.0.0.1:{}/update.php?mode=upload&sn={SN}",
        app.ports.http
    );
    let file_arg = format!("certs%2F{SN}-signedrequest.cer");
    let form = |field: &str, file: &Path| format!("{field}=@{}", file.display());
    let (s, body) = curl(&[
        "-F",
        &form("cert-00-90-33-30-00-af", &other),
        &format!("{base}&file={file_arg}&proceed=%2Fstatus"),
    ])
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("is not for the key of"), "{body}");
    let (s, body) = curl(&[
        "-F",
        &form("wrong-field", &signed),
        &format!("{base}&file={file_arg}"),
    ])
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body.contains("expected the field 'cert-00-90-33-30-00-af'"),
        "{body}"
    );
    let (s, body) = curl(&[
        "-F",
        &form("cert-00-90-33-30-00-af", &signed),
        &format!("{base}&file=certs%2FCAkey-x.pem"),
    ])
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body.contains(&format!("'file' must be certs/{SN}-signedrequest.cer")),
        "{body}"
    );
    assert!(!app.site().join("certs/CAkey-x.pem").exists());
    let (s, body) = curl(&[
        "-D",
        "-",
        "-F",
        &form("cert-00-90-33-30-00-af", &signed),
        &format!("{base}&file={file_arg}&proceed=%2Fstatus%3Fok"),
    ])
    .await;
    assert_eq!(s, 303, "{body}");
    assert!(
        body.to_ascii_lowercase().contains("location: /status?ok"),
        "{body}"
    );
    assert!(app
        .site()
        .join(format!("certs/{SN}-signedrequest.cer"))
        .exists());
    let msgs = app.all_msgs().await;
    assert!(
        msgs.iter().any(|m| m.starts_with(
            "certificates: signed certificate uploaded (CN '0090333000af', issuer 'Corp CA'"
        )),
        "{msgs:?}"
    );

    // Oversized uploads are refused before anything is read into a file.
    let big = work.path().join("big.pem");
    std::fs::write(&big, vec![b'A'; 5 * 1024 * 1024]).unwrap();
    let (s, body) = curl(&[
        "-F",
        &form("cert-00-90-33-30-00-af", &big),
        &format!("{base}&file={file_arg}"),
    ])
    .await;
    assert_eq!(s, 413, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csrs_and_names_write_nothing_outside_the_certificate_folder() {
    let work = tempfile::tempdir().unwrap();
    let ossl = Openssl::new(work.path());
    // A CSR asking for a CN with path characters: the CN is replaced, the file name comes
    // from the checked serial.
    let app = app_with_pending_csr(&ossl, "evil", "../../etc/passwd").await;
    let before = files_below(&app.site());
    let out = autoprov()
        .args(["ca", "sign", "--sn", SN, "--site"])
        .arg(app.site())
        .output()
        .unwrap();
    assert!(!out.status.success(), "no CA yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `autoprov ca init --site"));
    let out = autoprov()
        .args(["ca", "init", "--site"])
        .arg(app.site())
        .output()
        .unwrap();
    assert!(out.status.success());
    for (sn, cn, why) in [
        ("../../x", None, "invalid serial '../../x'"),
        ("a/b", None, "invalid serial 'a/b'"),
        (SN, Some("../x"), "CN '../x' must be"),
        (
            "00-90-33-30-00-00",
            None,
            "no CSR from device 00-90-33-30-00-00 yet",
        ),
    ] {
        let mut cmd = autoprov();
        cmd.args(["ca", "sign", "--sn", sn, "--site"])
            .arg(app.site());
        if let Some(cn) = cn {
            cmd.args(["--cn", cn]);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{sn}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{sn}: {err}");
    }
    let out = autoprov()
        .args(["ca", "sign", "--sn", SN, "--site"])
        .arg(app.site())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = std::fs::read(app.site().join(format!("certs/{SN}-signedrequest.cer"))).unwrap();
    let der = CertificateDer::pem_slice_iter(&signed)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        autoprov_server::pki::summarize(&der).unwrap().subject_cn,
        CN
    );
    let mut after = files_below(&app.site());
    after.retain(|f| !before.contains(f));
    after.retain(|f| !f.starts_with("autoprov.db"));
    assert_eq!(
        after,
        vec![
            "ca/autoprov-ca.key".to_string(),
            "certs/00-90-33-30-00-af-signedrequest.cer".into(),
            "certs/CAkey-autoprov.pem".into()
        ]
    );
    assert!(!work.path().join("etc").exists() && !app.site().join("../etc/passwd").exists());

    // Garbage and mixed-up CSRs sent by a device.
    let url = |file: &str| {
        format!(
            "http://127.0.0.1:{}/update.php?mode=vardump&sn={SN}&var=X509/REQUEST&file={file}&proc=var2bin&postproc=createPemFromDer",
            app.ports.http
        )
    };
    let own = format!("certs%2F{SN}-request.p10.der");
    // PEM text where hex is expected
    let pem_csr = std::fs::read_to_string(ossl.path("evil.csr")).unwrap();
    let (s, body) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("X509/REQUEST pb {}\r\n", pem_csr.lines().nth(1).unwrap()),
        &url(&own),
    ])
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body.contains("var2bin: value of 'X509/REQUEST' is not hex"),
        "{body}"
    );
    // hex that is no CSR: stored like the reference does, but reported, and never signed
    let (s, body) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        "X509/REQUEST pb 3082000a0203deadbeef\r\n",
        &url(&own),
    ])
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("# warning: X509/REQUEST is not a certificate signing request"),
        "{body}"
    );
    let msgs = app.all_msgs().await;
    assert!(
        msgs.iter().any(|m| m.starts_with(
            "certificates: unusable CSR: X509/REQUEST is not a certificate signing request"
        )),
        "{msgs:?}"
    );
    std::fs::remove_file(app.site().join(format!("certs/{SN}-signedrequest.cer"))).unwrap();
    let out = autoprov()
        .args(["ca", "sign", "--sn", SN, "--site"])
        .arg(app.site())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "certs/{SN}-request.p10.der is not a certificate signing request"
        )),
        "{err}"
    );

    // A device may only write its own CSR and error files: not the CA, not others' files.
    let ca_before = std::fs::read(app.site().join("certs/CAkey-autoprov.pem")).unwrap();
    for file in [
        "certs%2FCAkey-autoprov.pem".to_string(),
        format!("certs%2F{SN}-signedrequest.cer"),
        "certs%2F00-90-33-30-00-00-request.p10.der".to_string(),
        "..%2Fautoprov.toml".to_string(),
    ] {
        let (s, body) = curl(&[
            "-X",
            "PUT",
            "--data-binary",
            "X509/REQUEST pb 3082\r\n",
            &url(&file),
        ])
        .await;
        assert_eq!(s, 400, "{file}: {body}");
        assert!(body.trim_end().ends_with("- exit"), "{body}");
    }
    assert_eq!(
        std::fs::read(app.site().join("certs/CAkey-autoprov.pem")).unwrap(),
        ca_before
    );
    assert!(!app
        .site()
        .join(format!("certs/{SN}-signedrequest.cer"))
        .exists());

    // Oversized CSR bodies: 413, nothing written.
    std::fs::remove_file(app.site().join(format!("certs/{SN}-request.p10.der"))).unwrap();
    let big = work.path().join("big.txt");
    std::fs::write(
        &big,
        format!("X509/REQUEST pb {}\r\n", "ab".repeat(3 * 1024 * 1024)),
    )
    .unwrap();
    let (s, body) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", big.display()),
        &url(&own),
    ])
    .await;
    assert_eq!(s, 413, "{body}");
    assert!(!app
        .site()
        .join(format!("certs/{SN}-request.p10.der"))
        .exists());
}

// ---------------------------------------------------------------------------------------
// Firmware files (`/fw/`): the same bytes over HTTP (sendfile) and HTTPS (read and encrypted)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw_files_are_the_same_bytes_over_http_and_https() {
    let image: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let app = TlsApp::spawn(
        |_| "[master]\ninfo = \"\"\n".to_string(),
        |site| {
            std::fs::create_dir_all(site.join("fw/137640")).unwrap();
            std::fs::write(site.join("fw/137640/ip232.bin"), &image).unwrap();
        },
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let fetch = |url: String, extra: Vec<String>, out: PathBuf| async move {
        let status = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "20", "-o"])
            .arg(&out)
            .args(&extra)
            .arg(url)
            .status()
            .await
            .expect("curl is installed");
        assert!(status.success(), "curl failed: {status}");
        std::fs::read(&out).unwrap()
    };
    let ca = app.server_ca().display().to_string();
    let sent_before = autoprov_server::sendfile::bytes_sent();
    let plain = fetch(
        format!("http://127.0.0.1:{}/fw/137640/ip232.bin", app.ports.http),
        vec![],
        work.path().join("plain.bin"),
    )
    .await;
    assert!(plain == image, "HTTP download differs");
    assert!(autoprov_server::sendfile::bytes_sent() - sent_before >= image.len() as u64);
    let tls = fetch(
        format!("https://127.0.0.1:{}/fw/137640/ip232.bin", app.ports.https),
        vec!["--cacert".into(), ca.clone()],
        work.path().join("tls.bin"),
    )
    .await;
    assert!(tls == image, "HTTPS download differs");
    // a resumed download over HTTPS: the tail only
    let tail = fetch(
        format!(
            "https://127.0.0.1:{}/upd/fw/137640/ip232.bin",
            app.ports.https
        ),
        vec!["--cacert".into(), ca, "-r".into(), "1000000-".into()],
        work.path().join("tail.bin"),
    )
    .await;
    assert!(tail == image[1_000_000..], "range over HTTPS differs");

    // An operator overwrites the file in place (cp): the next download is the new content,
    // the server keeps running, and the ETag changes.
    let head = |port: u16| {
        let url = format!("http://127.0.0.1:{port}/fw/137640/ip232.bin");
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sS", "-I", &url])
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_lowercase()
        }
    };
    let before = head(app.ports.http).await;
    assert!(before.contains("etag: \""), "{before}");
    assert!(before.contains("content-length: 1500000"), "{before}");
    std::fs::write(app.site().join("fw/137640/ip232.bin"), b"new build").unwrap();
    let again = fetch(
        format!("http://127.0.0.1:{}/fw/137640/ip232.bin", app.ports.http),
        vec![],
        work.path().join("new.bin"),
    )
    .await;
    assert_eq!(again, b"new build");
    let after = head(app.ports.http).await;
    assert!(after.contains("content-length: 9"), "{after}");
    let etag = |h: &str| {
        h.lines()
            .find(|l| l.starts_with("etag:"))
            .map(str::to_string)
    };
    assert_ne!(etag(&before), etag(&after));

    // leaving the folder is refused
    let (s, _) = curl(&[&format!(
        "http://127.0.0.1:{}/fw/%2e%2e/autoprov.toml",
        app.ports.http
    )])
    .await;
    assert_eq!(s, 400);
}
