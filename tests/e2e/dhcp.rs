//! `autoprov dhcp-config`: option snippets per vendor for dnsmasq (checked by dnsmasq itself
//! where it is installed), ISC dhcpd and Kea (valid JSON).

use crate::zt_support::autoprov;

async fn dhcp_config(site: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = autoprov()
        .arg("dhcp-config")
        .arg("--site")
        .arg(site)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dhcp_config_per_format() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("autoprov.toml"),
        "[provisioning]\nbase_url = \"http://prov.example:8080\"\n",
    )
    .unwrap();
    let (ok, dnsmasq, err) = dhcp_config(site.path(), &["--format", "dnsmasq"]).await;
    assert!(ok, "{err}");
    for line in [
        "dhcp-vendorclass=set:autoprov-snom,snom",
        "dhcp-option=tag:autoprov-snom,66,\"http://prov.example:8080/snom/\"",
        "dhcp-option=tag:autoprov-snom,vendor:snom,66,\"http://prov.example:8080/snom/\"",
        "dhcp-vendorclass=set:autoprov-digium,digium_",
        "dhcp-option=tag:autoprov-gigaset,114,\"http://prov.example:8080/gigaset/\"",
        "dhcp-mac=set:autoprov-yealink,00:15:65:*:*:*",
        "dhcp-option=tag:autoprov-cisco,66,\"prov.example\"",
        "dhcp-option=tag:autoprov-polycom,160,\"http://prov.example:8080/polycom/\"",
        "dhcp-option=tag:autoprov-fanvil,43,\"http://prov.example:8080/fanvil/$mac.cfg\"",
    ] {
        assert!(
            dnsmasq.lines().any(|l| l == line),
            "missing {line}:\n{dnsmasq}"
        );
    }
    let has_dnsmasq = std::process::Command::new("sh")
        .args(["-c", "command -v dnsmasq"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if has_dnsmasq {
        let f = site.path().join("phones.conf");
        std::fs::write(&f, &dnsmasq).unwrap();
        let out = std::process::Command::new("dnsmasq")
            .arg("--test")
            .arg(format!("--conf-file={}", f.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dnsmasq rejects the snippet: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("dhcp_config_per_format: dnsmasq not installed, syntax not checked by it");
    }

    let (ok, isc, err) = dhcp_config(
        site.path(),
        &["--format", "isc", "--url", "http://192.0.2.5/"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(isc.contains("class \"autoprov-snom\" {\n  match if substring(option vendor-class-identifier, 0, 4) = \"snom\";"), "{isc}");
    assert!(
        isc.contains("option default-url \"http://192.0.2.5/gigaset/\";"),
        "{isc}"
    );
    assert_eq!(isc.matches('{').count(), isc.matches('}').count());

    let (ok, kea, err) = dhcp_config(
        site.path(),
        &["--format", "kea", "--url", "http://192.0.2.5/"],
    )
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&kea).expect("Kea output is JSON");
    let classes = v["Dhcp4"]["client-classes"].as_array().unwrap();
    assert!(classes
        .iter()
        .any(|c| c["test"] == "substring(option[60].hex,0,7) == 'digium_'"));

    let (ok, _, err) = dhcp_config(site.path(), &["--format", "kea", "--url", "ftp://x/"]).await;
    assert!(!ok && err.contains("is not an http(s) URL"), "{err}");
    let (ok, _, _) = dhcp_config(site.path(), &["--format", "bind"]).await;
    assert!(!ok);
}
