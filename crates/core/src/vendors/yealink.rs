//! Yealink (T-, CP-, VP-, W-series): `.boot` files, `y0000000000XX.cfg` per model, `<mac>.cfg`
//! per device, and optionally AES-encrypted files with `<name>_Security.enc` key files.
//!
//! Request order of the phone (vendor facts §3): `<mac>.boot`, else `y000000000000.boot`, else
//! the legacy pair `y0000000000XX.cfg` then `<mac>.cfg`. We answer `<mac>.boot` (which includes
//! the model and the device file), so the phone takes the first path; the legacy names are
//! answered too. Every file starts with `#!version:1.0.0.1`.
//!
//! Encryption (`[vendors.yealink.options] encrypt = true`): the `.cfg` files are encrypted with
//! AES-128-ECB under a per-file key of 16 characters `[a-zA-Z0-9]`; `<name>_Security.enc` holds
//! that key encrypted with AES-128-ECB under the common key (default `EKs35XacP6eybA25`, the
//! one in the firmware). So `openssl enc -d -aes-128-ecb -nopad -K <hex of key>` decrypts.
//! The per-file key is derived from the file name and the plain text (MD5), not random, so an
//! unchanged file encrypts to the same bytes and the phone's MD5 check still sees "unchanged".
//! Padding is **unconfirmed** (the tools call openssl with `-nopad`): we pad with NUL bytes to
//! the block size, which a C-string parser ignores.

use std::sync::OnceLock;

use aes::cipher::{BlockEncrypt, KeyInit};
use md5::{Digest, Md5};
use regex::Regex;
use serde_json::json;

use super::{
    base_vars, claim, mac_from_name, mac_like, re, render_text, DeviceHint, DeviceRequest,
    Evidence, FileKind, RenderContext, RenderError, Rendered, RequestedFile, Vendor, Verdict, TEXT,
};
use crate::vendors::mac::Mac;

pub struct Yealink;

/// The common key built into Yealink firmware and tools ([YC]).
pub const COMMON_KEY: &str = "EKs35XacP6eybA25";

/// `y0000000000XX.cfg` codes (FusionPBX and Wazo examples in the vendor facts). The first model
/// of a code is the one we name; the code is usually, but not always, the first field of the
/// firmware version (T42S = 67 and T41S = 68 run 66.x firmware).
const MODEL_CODES: &[(u32, &str)] = &[
    (66, "T46S"),
    (66, "T48S"),
    (67, "T42S"),
    (68, "T41S"),
    (108, "T46U"),
    (108, "T48U"),
    (108, "T43U"),
    (108, "T42U"),
    (108, "T41U"),
    (28, "T46G"),
    (29, "T42G"),
    (35, "T48G"),
    (36, "T41P"),
    (44, "T23G"),
    (46, "T29G"),
    (52, "T21P_E2"),
    (53, "T19P_E2"),
    (54, "T40P"),
    (69, "T27G"),
    (73, "CP960"),
    (78, "CP920"),
    (123, "T31G"),
    (124, "T33G"),
    (143, "CP965"),
    (148, "CP925"),
    (25, "W52P"),
    (37, "CP860"),
    (5, "T22P"),
    (7, "T20P"),
];

fn model_of_code(code: u32) -> Option<&'static str> {
    MODEL_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, m)| *m)
}

/// The `XX` of a model: the table, else the first field of its firmware version.
fn code_of(model: Option<&str>, firmware: Option<&str>) -> Option<u32> {
    let by_model = model.and_then(|m| {
        MODEL_CODES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(m))
            .map(|(c, _)| *c)
    });
    by_model.or_else(|| firmware?.split('.').next()?.parse().ok())
}

/// `y` + the code zero-padded to 12 digits.
fn common_name(code: u32) -> String {
    format!("y{code:012}")
}

struct Patterns {
    ua: Vec<Regex>,
    ua_nomac: Regex,
    common: Regex,
    key: Regex,
    mac_file: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        // The regexes of the vendor facts, with the MAC widened to 12 bare hex digits.
        let mac = r"([\da-fA-F]{2}(?::[\da-fA-F]{2}){5}|[\da-fA-F]{12})";
        Patterns {
            ua: vec![
                re(&format!(
                    r"^[yY]ealink\s+SIP(?: VP)?-(\w+)\s+([\d.]+)\s+{mac}$"
                )),
                re(&format!(r"^[yY]ealink\s+(CP860|W52P)\s+([\d.]+)\s+{mac}$")),
                re(&format!(r"(VP530P?|W52P)\s+([\d.]+)\s+{mac}$")),
            ],
            ua_nomac: re(r"[yY]ealink-(\w+)\s+([\d.]+)\s+([\d.]+)$"),
            common: re(r"^y(\d{12})\.cfg$"),
            key: re(r"^(y\d{12}|[0-9a-fA-F]{12})_Security\.enc$"),
            mac_file: re(r"^([^.]+)\.(cfg|boot)$"),
        }
    })
}

impl Yealink {
    /// The plain text of a `.cfg` or `.boot` file.
    fn plain(&self, ctx: &RenderContext<'_>, file: &RequestedFile) -> Result<String, RenderError> {
        let id = ctx.identity;
        let code = match &file.kind {
            FileKind::Common => file
                .name
                .strip_prefix('y')
                .and_then(|s| s.get(..12))
                .and_then(|s| s.parse().ok()),
            _ => None,
        }
        .or_else(|| code_of(id.model.as_deref(), id.firmware.as_deref()));
        let mut vars = base_vars(ctx);
        vars.insert(
            "yealink".into(),
            json!({
                "model_code": code,
                "common_file": code.map(|c| format!("{}.cfg", common_name(c))),
                "device_file": id.mac.as_ref().map(|m| format!("{m}.cfg")),
            }),
        );
        vars.insert(
            "file".into(),
            json!({ "name": file.name, "kind": file.kind.name() }),
        );
        let template = if file.kind == FileKind::Boot {
            "boot.j2"
        } else {
            "config.cfg.j2"
        };
        render_text(ctx, template, vars)
    }

    fn encrypting(ctx: &RenderContext<'_>) -> bool {
        matches!(ctx.options.get("encrypt"), Some(toml::Value::Boolean(true)))
    }

    fn common_key(ctx: &RenderContext<'_>) -> [u8; 16] {
        let k = match ctx.options.get("common_key") {
            Some(toml::Value::String(s)) if s.len() == 16 => s.as_str(),
            _ => COMMON_KEY,
        };
        let mut out = [0u8; 16];
        out.copy_from_slice(k.as_bytes());
        out
    }
}

/// The per-file key: 16 characters `[a-zA-Z0-9]` derived from the file name and content.
pub fn file_key(name: &str, plain: &[u8]) -> [u8; 16] {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = Md5::new();
    h.update(b"autoprov yealink file key\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(plain);
    let digest = h.finalize();
    let mut key = [0u8; 16];
    for (k, d) in key.iter_mut().zip(digest.iter()) {
        *k = ALPHABET[usize::from(*d) % ALPHABET.len()];
    }
    key
}

/// AES-128-ECB over `data`, padded with NUL bytes to a multiple of 16.
pub fn ecb_encrypt(key: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let cipher = aes::Aes128::new(key.into());
    let mut out = data.to_vec();
    let pad = (16 - out.len() % 16) % 16;
    out.resize(out.len() + pad, 0);
    for block in out.chunks_exact_mut(16) {
        cipher.encrypt_block(block.into());
    }
    out
}

impl Vendor for Yealink {
    fn id(&self) -> &'static str {
        "yealink"
    }

    fn ouis(&self) -> &'static [&'static str] {
        &[
            "001565", "805EC0", "805E0C", "249AD8", "44DBD2", "E434D7", "644F56", "EC1DA9",
            "3497D7", "B061A9", "C4FC22", "F01653",
        ]
    }

    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint> {
        let p = patterns();
        let ua = ua.trim();
        for r in &p.ua {
            if let Some(c) = r.captures(ua) {
                return Some(DeviceHint {
                    model: Some(c[1].to_string()),
                    firmware: Some(c[2].to_string()),
                    mac: Mac::parse(&c[3]).ok(),
                });
            }
        }
        p.ua_nomac.captures(ua).map(|c| DeviceHint {
            model: Some(c[1].to_string()),
            firmware: Some(c[2].to_string()),
            mac: None,
        })
    }

    fn parse_option60(&self, _class: &str) -> Option<DeviceHint> {
        // Configurable on the phone (`static.network.dhcp.option60type`): nothing to match.
        None
    }

    fn identify(&self, req: &DeviceRequest) -> Verdict {
        let p = patterns();
        let file = req.file_name();
        let ua = self.parse_user_agent(&req.user_agent);
        let ours = ua.is_some() || req.vendor_prefix().is_some_and(|v| v.id() == self.id());
        let id = self.id();
        if file == "y000000000000.boot" {
            return claim(
                id,
                file,
                FileKind::Boot,
                Evidence::FileName,
                ua.as_ref(),
                None,
                None,
            );
        }
        if let Some(c) = p.common.captures(file) {
            return common_claim(file, &c[1], ua.as_ref(), FileKind::Common);
        }
        if let Some(c) = p.key.captures(file) {
            let base = &c[1];
            let inner = if let Some(digits) = base.strip_prefix('y') {
                common_claim(
                    &format!("{base}.cfg"),
                    digits,
                    ua.as_ref(),
                    FileKind::Common,
                )
            } else {
                match mac_from_name(id, file, base) {
                    Ok(mac) => claim(
                        id,
                        &format!("{}.cfg", mac),
                        FileKind::Device,
                        Evidence::FileName,
                        ua.as_ref(),
                        None,
                        Some(mac),
                    ),
                    Err(v) => return v,
                }
            };
            return match inner {
                Verdict::Mine(mut identity) => {
                    let inner_file = identity.file.clone();
                    identity.file = RequestedFile {
                        name: file.to_string(),
                        kind: FileKind::Key(Box::new(inner_file)),
                    };
                    Verdict::Mine(identity)
                }
                other => other,
            };
        }
        if let Some(c) = p.mac_file.captures(file) {
            let boot = &c[2] == "boot";
            if !boot && !ours && !mac_like(&c[1]) {
                return Verdict::NotMine;
            }
            let mac = match mac_from_name(id, file, &c[1]) {
                Ok(m) => m,
                Err(v) => return v,
            };
            let (kind, evidence) = if boot {
                (FileKind::Boot, Evidence::FileName)
            } else {
                (FileKind::Device, Evidence::SharedName)
            };
            return claim(id, file, kind, evidence, ua.as_ref(), None, Some(mac));
        }
        if ours {
            return Verdict::Refused(format!(
                "yealink: '{file}' is not generated here (served: <mac>.boot, \
                 y000000000000.boot, y0000000000XX.cfg, <mac>.cfg and their _Security.enc)"
            ));
        }
        Verdict::NotMine
    }

    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        let file = &ctx.identity.file;
        match &file.kind {
            FileKind::Key(inner) => {
                if !Self::encrypting(ctx) {
                    return Err(RenderError::NotAvailable(format!(
                        "yealink: {} is served only with [vendors.yealink.options] encrypt = true",
                        file.name
                    )));
                }
                let plain = self.plain(ctx, inner)?;
                let key = file_key(&inner.name, plain.as_bytes());
                Ok(Rendered {
                    body: ecb_encrypt(&Self::common_key(ctx), &key),
                    content_type: "application/octet-stream",
                })
            }
            FileKind::Boot => Ok(Rendered {
                body: self.plain(ctx, file)?.into_bytes(),
                content_type: TEXT,
            }),
            _ => {
                let plain = self.plain(ctx, file)?;
                if Self::encrypting(ctx) {
                    let key = file_key(&file.name, plain.as_bytes());
                    Ok(Rendered {
                        body: ecb_encrypt(&key, plain.as_bytes()),
                        content_type: "application/octet-stream",
                    })
                } else {
                    Ok(Rendered {
                        body: plain.into_bytes(),
                        content_type: TEXT,
                    })
                }
            }
        }
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("boot.j2", include_str!("shipped/yealink/boot.j2")),
            (
                "config.cfg.j2",
                include_str!("shipped/yealink/config.cfg.j2"),
            ),
        ]
    }

    fn check_option(&self, key: &str, value: &toml::Value) -> Result<(), String> {
        match (key, value) {
            ("encrypt", toml::Value::Boolean(_)) => Ok(()),
            ("encrypt", _) => Err("must be true or false".into()),
            ("common_key", toml::Value::String(s))
                if s.len() == 16 && s.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(())
            }
            ("common_key", _) => Err(
                "must be 16 printable ASCII characters (the key set on the phones; Yealink's \
                 built-in one is EKs35XacP6eybA25)"
                    .into(),
            ),
            _ => Err(format!(
                "unknown option '{key}'; yealink options are encrypt, common_key"
            )),
        }
    }

    fn check_raw_key(&self, key: &str) -> Result<(), String> {
        if !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            Ok(())
        } else {
            Err("must be a Yealink parameter name such as static.network.vlan.internet_port_enable \
                 (letters, digits, '.', '_', '-')"
                .into())
        }
    }
}

/// A `y0000000000XX.cfg` (or its key file): the model from the code table, else from the
/// User-Agent; an unknown code without a User-Agent is refused.
fn common_claim(file: &str, digits: &str, ua: Option<&DeviceHint>, kind: FileKind) -> Verdict {
    let code: u32 = digits.parse().unwrap_or(0);
    if code == 0 {
        return Verdict::Refused(format!(
            "yealink: '{file}' names model code 0; the common boot file is y000000000000.boot"
        ));
    }
    let model = match (model_of_code(code), ua.and_then(|h| h.model.as_deref())) {
        (_, Some(m)) => m.to_string(),
        (Some(m), None) => m.to_string(),
        (None, None) => {
            let mut known: Vec<u32> = MODEL_CODES.iter().map(|(c, _)| *c).collect();
            known.sort_unstable();
            known.dedup();
            let known: Vec<String> = known.iter().map(u32::to_string).collect();
            return Verdict::Refused(format!(
                "yealink: unknown model code {code} in '{file}' and no Yealink User-Agent to \
                 tell the model; known codes: {}",
                known.join(", ")
            ));
        }
    };
    claim(
        "yealink",
        file,
        kind,
        Evidence::FileName,
        ua,
        Some(model),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::Identity;

    fn ident(path: &str, ua: &str) -> Verdict {
        Yealink.identify(&DeviceRequest {
            path: path.into(),
            user_agent: ua.into(),
            ..Default::default()
        })
    }

    fn mine(v: Verdict) -> Identity {
        match v {
            Verdict::Mine(i) => *i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn user_agents() {
        let h = Yealink
            .parse_user_agent("Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("T46G"));
        assert_eq!(h.firmware.as_deref(), Some("28.72.0.1"));
        assert_eq!(h.mac.unwrap().as_str(), "0015654aa937");
        let h = Yealink
            .parse_user_agent("Yealink SIP-T56A 58.80.0.25 001565f429a4")
            .unwrap();
        assert_eq!(h.mac.unwrap().as_str(), "001565f429a4");
        let h = Yealink
            .parse_user_agent("Yealink SIP VP-T49G 51.80.0.10 00:15:65:11:22:33")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("T49G"));
        let h = Yealink
            .parse_user_agent("W52P 25.30.0.2 00:15:65:11:22:33")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("W52P"));
        assert!(Yealink.parse_user_agent("Mozilla/5.0").is_none());
    }

    #[test]
    fn files() {
        let i = mine(ident("/y000000000028.cfg", ""));
        assert_eq!(
            (i.model.as_deref(), &i.file.kind),
            (Some("T46G"), &FileKind::Common)
        );
        let i = mine(ident("/y000000000108.cfg", ""));
        assert_eq!(i.model.as_deref(), Some("T46U"));
        let i = mine(ident("/001565AABBCC.boot", ""));
        assert_eq!(i.mac.unwrap().as_str(), "001565aabbcc");
        let i = mine(ident("/001565aabbcc.cfg", ""));
        assert_eq!(i.evidence, Evidence::SharedName);
        let i = mine(ident(
            "/001565aabbcc.cfg",
            "Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37",
        ));
        assert_eq!(i.evidence, Evidence::UserAgent);
        assert_eq!(
            i.mac.unwrap().as_str(),
            "001565aabbcc",
            "the file's MAC wins"
        );
        let i = mine(ident("/y000000000066_Security.enc", ""));
        match i.file.kind {
            FileKind::Key(inner) => assert_eq!(inner.name, "y000000000066.cfg"),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn bad_names() {
        // Unknown model code: refused without a User-Agent, served with one.
        match ident("/y000000000099.cfg", "") {
            Verdict::Refused(r) => assert!(r.contains("unknown model code 99"), "{r}"),
            v => panic!("{v:?}"),
        }
        let i = mine(ident(
            "/y000000000099.cfg",
            "Yealink SIP-T99X 99.1.0.1 00:15:65:4a:a9:37",
        ));
        assert_eq!(i.model.as_deref(), Some("T99X"));
        // Malformed MACs.
        match ident("/00156.boot", "") {
            Verdict::Refused(r) => assert!(r.contains("not a MAC"), "{r}"),
            v => panic!("{v:?}"),
        }
        match ident(
            "/0015zzaabbcc.cfg",
            "Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37",
        ) {
            Verdict::Refused(r) => assert!(r.contains("hex digits"), "{r}"),
            v => panic!("{v:?}"),
        }
        assert_eq!(ident("/0015zzaabbcc.cfg", ""), Verdict::NotMine);
        assert_eq!(ident("/000000000000.cfg", ""), Verdict::Refused(
            "yealink: 000000000000.cfg: '000000000000' is not a MAC address: the all-zero and broadcast addresses are not device addresses".into()));
    }

    #[test]
    fn crypto_is_deterministic_and_padded() {
        let k1 = file_key("a.cfg", b"x = 1\n");
        assert_eq!(k1, file_key("a.cfg", b"x = 1\n"));
        assert_ne!(k1, file_key("a.cfg", b"x = 2\n"));
        assert!(k1.iter().all(u8::is_ascii_alphanumeric));
        assert_eq!(ecb_encrypt(&k1, b"0123456789abcdef").len(), 16);
        assert_eq!(ecb_encrypt(&k1, b"0123456789abcdef0").len(), 32);
        // FIPS-197 appendix C.1 (AES-128) test vector.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let pt: Vec<u8> = (0..16u8).map(|i| i * 0x11).collect();
        let ct = ecb_encrypt(&key, &pt);
        let hex: String = ct.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "69c4e0d86a7b0430d8cdb78070b4c55a");
    }
}
