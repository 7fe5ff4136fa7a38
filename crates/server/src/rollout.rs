//! The server side of the device certificate roll-out: a device's files in `customcerts.dir`
//! (`<sn>-request.p10.der` from the device, `<sn>-signedrequest.cer` for it) and what an
//! operator (`autoprov certs ...`, `autoprov ca sign`, `mode=upload`) or the auto-sign policy
//! does with them.
//!
//! The engine ([`autoprov_core::innovaphone`]) decides when to ask for a CSR and when to push a
//! certificate; this module only checks and writes the files, and never writes outside the
//! certificate folder: serials are checked ([`check_serial`]) before they become file names.

use std::path::PathBuf;

use autoprov_core::innovaphone::engine::check_serial;
use autoprov_core::innovaphone::ClientCert;
use autoprov_core::Site;

use crate::fsutil::atomic_write;
use crate::pki::{self, CertSummary, Csr, PkiError};

/// Why a roll-out action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("certificate roll-out is off: set customcerts.dir (e.g. \"certs\") in autoprov.toml")]
    Off,
    #[error("invalid serial '{sn}': {why}")]
    Serial { sn: String, why: String },
    #[error("no CSR from device {sn} yet ({file} is missing): the device sends it after the CSR command (see `autoprov devices`)")]
    NoCsr { sn: String, file: String },
    #[error("{0}")]
    Pki(#[from] PkiError),
    #[error("{0}")]
    Refused(String),
}

/// The roll-out files of one device, as site-relative names and paths.
pub struct DeviceFiles {
    pub csr_rel: String,
    pub csr: PathBuf,
    pub pem: PathBuf,
    pub signed_rel: String,
    pub signed: PathBuf,
}

/// The files of device `sn` (refuses serials that are not safe file name parts).
pub fn device_files(site: &Site, sn: &str) -> Result<DeviceFiles, RolloutError> {
    let dir = site.config.customcerts.dir.as_str();
    if dir.is_empty() {
        return Err(RolloutError::Off);
    }
    check_serial(sn).map_err(|why| RolloutError::Serial {
        sn: sn.to_string(),
        why,
    })?;
    let rel = |suffix: &str| format!("{dir}/{sn}-{suffix}");
    let path = |r: &str| {
        site.path(r).ok_or_else(|| {
            RolloutError::Refused(format!(
                "customcerts.dir '{dir}' is not a folder inside the site"
            ))
        })
    };
    let csr_rel = rel("request.p10.der");
    let signed_rel = rel("signedrequest.cer");
    Ok(DeviceFiles {
        csr: path(&csr_rel)?,
        pem: path(&rel("request.p10.pem"))?,
        signed: path(&signed_rel)?,
        csr_rel,
        signed_rel,
    })
}

/// The CN autoprov gives a device certificate: the serial without dashes (what the trust check
/// accepts besides the hwid, and the reference's default `CSRdn-cn="{sn}"`).
pub fn device_cn(sn: &str) -> String {
    sn.replace('-', "")
}

/// The pending CSR of `sn`, verified.
pub fn pending_csr(site: &Site, sn: &str) -> Result<Csr, RolloutError> {
    let f = device_files(site, sn)?;
    let bytes = match std::fs::read(&f.csr) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RolloutError::NoCsr {
                sn: sn.to_string(),
                file: f.csr_rel,
            })
        }
        Err(source) => {
            return Err(PkiError::Read {
                path: f.csr.clone(),
                source,
            }
            .into())
        }
    };
    Ok(pki::read_csr(&bytes, &f.csr_rel)?)
}

/// Check a signed certificate for `sn` (PEM or DER) and store it as
/// `<dir>/<sn>-signedrequest.cer` (PEM) for the next poll. It must be a device certificate for
/// the key of the device's pending CSR and still be valid.
pub fn install_signed(site: &Site, sn: &str, bytes: &[u8]) -> Result<CertSummary, RolloutError> {
    let f = device_files(site, sn)?;
    let certs = pki::read_certs(bytes, "the signed certificate")?;
    let leaf = &certs[0];
    let sum = pki::summarize(leaf)?;
    if sum.is_ca {
        return Err(RolloutError::Refused(format!(
            "the signed certificate is a CA certificate ('{}'), not the certificate for device {sn}",
            sum.subject_cn
        )));
    }
    let csr = pending_csr(site, sn)?;
    if csr.spki != sum.spki {
        return Err(RolloutError::Refused(format!(
            "the signed certificate (CN '{}') is not for the key of {sn}'s pending CSR ({}): upload the certificate the CA made from that CSR",
            sum.subject_cn, f.csr_rel
        )));
    }
    let now = crate::app::now();
    if sum.not_after < now {
        return Err(RolloutError::Refused(format!(
            "the signed certificate (CN '{}') has already expired",
            sum.subject_cn
        )));
    }
    atomic_write(&f.signed, pki::cert_pem(leaf).as_bytes()).map_err(|source| PkiError::Write {
        path: f.signed.clone(),
        source,
    })?;
    Ok(sum)
}

/// Sign the pending CSR of `sn` with the site's CA (`cn` or [`device_cn`] as CN) and store the
/// certificate for the next poll.
pub fn sign_with_ca(site: &Site, sn: &str, cn: Option<&str>) -> Result<CertSummary, RolloutError> {
    let cn = match cn {
        Some(c) => {
            let ok = !c.is_empty()
                && c.len() <= 64
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !ok {
                return Err(RolloutError::Refused(format!(
                    "CN '{c}' must be 1..64 letters, digits, '-', '_' or '.'"
                )));
            }
            c.to_string()
        }
        None => device_cn(sn),
    };
    let csr = pending_csr(site, sn)?;
    let ca = pki::load_ca(site)?;
    let der = ca.sign(&csr, &cn, site.config.ca.valid_days)?;
    install_signed(site, sn, &der)
}

/// One device with roll-out files.
pub struct DeviceRollout {
    pub sn: String,
    /// The CSR's requested CN, or why it cannot be used.
    pub csr: Option<Result<String, String>>,
    /// The signed certificate waiting for the device.
    pub signed: Option<Result<CertSummary, String>>,
}

/// Every device that has a CSR or a signed certificate in the certificate folder, by serial.
pub fn list(site: &Site) -> Result<Vec<DeviceRollout>, RolloutError> {
    let dir = site.config.customcerts.dir.as_str();
    if dir.is_empty() {
        return Err(RolloutError::Off);
    }
    let Some(path) = site.path(dir) else {
        return Err(RolloutError::Refused(format!(
            "customcerts.dir '{dir}' is not a folder inside the site"
        )));
    };
    let mut sns: Vec<String> = match std::fs::read_dir(&path) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter_map(|n| {
                n.strip_suffix("-request.p10.der")
                    .or_else(|| n.strip_suffix("-signedrequest.cer"))
                    .map(str::to_string)
            })
            .filter(|sn| check_serial(sn).is_ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(PkiError::Read { path, source }.into()),
    };
    sns.sort();
    sns.dedup();
    let mut out = Vec::new();
    for sn in sns {
        let f = device_files(site, &sn)?;
        let csr = f.csr.exists().then(|| {
            std::fs::read(&f.csr)
                .map_err(|e| e.to_string())
                .and_then(|b| pki::read_csr(&b, &f.csr_rel).map_err(|e| e.to_string()))
                .map(|c| c.subject_cn)
        });
        let signed = f.signed.exists().then(|| {
            std::fs::read(&f.signed)
                .map_err(|e| e.to_string())
                .and_then(|b| pki::read_certs(&b, &f.signed_rel).map_err(|e| e.to_string()))
                .and_then(|c| pki::summarize(&c[0]).map_err(|e| e.to_string()))
        });
        out.push(DeviceRollout { sn, csr, signed });
    }
    Ok(out)
}

/// The auto-sign policy (`[ca] auto_sign_for`): sign the pending CSR of the device when it
/// connected directly (no proxy) with a verified client certificate that names it (CN = hwid
/// or sn without dashes) and comes from one of the listed CAs. `None` when the policy does not
/// apply (nothing to do); otherwise what happened, for the log and the device's messages.
pub fn auto_sign(
    site: &Site,
    sn: &str,
    hwid: &str,
    cert: Option<&ClientCert>,
    via_proxy: bool,
) -> Option<Result<String, String>> {
    let policy = &site.config.ca.auto_sign_for;
    let cert = cert?;
    if policy.is_empty() || via_proxy || !cert.verified {
        return None;
    }
    if !policy.iter().any(|p| p.trim() == cert.issuer_cn) {
        return None;
    }
    if cert.subject_cn != hwid && cert.subject_cn != device_cn(sn) {
        return None;
    }
    let f = device_files(site, sn).ok()?;
    if !f.csr.exists() || f.signed.exists() {
        return None;
    }
    Some(
        sign_with_ca(site, sn, None)
            .map(|s| {
                format!(
                    "CSR signed automatically by the built-in CA (CN '{}', valid until {}): the device proved itself with a certificate from '{}'",
                    s.subject_cn,
                    format_time(s.not_after),
                    cert.issuer_cn
                )
            })
            .map_err(|e| format!("automatic signing of the CSR failed: {e}")),
    )
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for epoch seconds.
pub fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(|d| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                d.year(),
                u8::from(d.month()),
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            )
        })
        .unwrap_or_else(|_| t.to_string())
}
