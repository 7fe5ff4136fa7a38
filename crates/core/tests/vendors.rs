//! Golden files of the vendor renderers: for each case, a request (path, User-Agent) against
//! the site `tests/vendors/site.toml` is identified, its settings resolved and the file rendered
//! with the shipped templates; the bytes must equal `tests/vendors/<vendor>/<golden>`.
//!
//! Each golden file was reviewed against `shared/reference/vendor-facts.md`. After an intended
//! change, `AUTOPROV_BLESS=1 cargo test -p autoprov-core --test vendors` rewrites them; review
//! the diff before keeping it.

use std::path::PathBuf;

use autoprov_core::validate::validate_text;
use autoprov_core::vendors::{
    identify, render_file, resolve_for, DeviceRequest, FirmwareRef, Known, ShippedTemplates,
};
use autoprov_core::SiteConfig;

struct Case {
    golden: &'static str,
    path: &'static str,
    ua: &'static str,
    /// Injected firmware target (the catalogue's job in the server): (version, url).
    firmware: Option<(&'static str, &'static str)>,
    /// What the inventory knows: (vendor, model).
    known: Option<(&'static str, &'static str)>,
}

const SNOM_D785: &str = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24 SXM:0 UXM:0)";
const SNOM_710: &str =
    "Mozilla/4.0 (compatible; snom710-SIP 8.7.5.35 1.1.5-IFX-05.01.12 000413741767)";
const YEALINK_T46S: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
const YEALINK_T46G: &str = "Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37";
const GIGASET_N870: &str = "Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605";
const GIGASET_N510: &str = "N510 IP PRO/42.245.00.000.000;7C2F804DF9A9";
const POLYCOM_VVX: &str = "FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application";
const POLYCOM_SPIP: &str = "FileTransport PolycomSoundPointIP-SPIP_335-UA/3.2.1.0078";
const CISCO_SPA: &str = "Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400UK)";
const CISCO_MPP: &str = "Cisco-CP-8841-3PCC/11.0 (00562b043615)";
const GS_GXP2200: &str = "Grandstream Model HW GXP2200 V2.2A SW 1.0.1.33 DevId 000b82462d97";
const GS_GXP2170: &str = "Grandstream Model HW GXP2170 V1.0A SW 1.0.11.6 DevId 000b82aabbcc";
const FANVIL_X4: &str = "Fanvil X4 2.10.2.6887 0c383e07e16c";
const FANVIL_X6U: &str = "Fanvil X6U Pro 0.0.10 0c383e07e16d";
const DIGIUM_D40: &str = "Digium D40 1_4_1_0_57025";

fn cases() -> Vec<Case> {
    let c = |golden, path, ua| Case {
        golden,
        path,
        ua,
        firmware: None,
        known: None,
    };
    let fw = |golden, path, ua, version, url| Case {
        golden,
        path,
        ua,
        firmware: Some((version, url)),
        known: None,
    };
    vec![
        // Snom D785: the phone's sequence, with a firmware target.
        fw(
            "snom/snomD785.htm",
            "/snomD785.htm",
            SNOM_D785,
            "10.1.46.16",
            "http://prov.example.com:8080/firmware/snom/D785/10.1.46.16/snomD785-10.1.46.16-SIP-r.bin",
        ),
        c("snom/snomD785-000413922D24.htm", "/snomD785-000413922D24.htm", SNOM_D785),
        fw(
            "snom/000413922D24.xml",
            "/snom/000413922D24.xml",
            SNOM_D785,
            "10.1.46.16",
            "http://prov.example.com:8080/firmware/snom/D785/10.1.46.16/snomD785-10.1.46.16-SIP-r.bin",
        ),
        fw(
            "snom/snomD785-firmware.xml",
            "/snom/snomD785-firmware.xml",
            SNOM_D785,
            "10.1.46.16",
            "http://prov.example.com:8080/firmware/snom/D785/10.1.46.16/snomD785-10.1.46.16-SIP-r.bin",
        ),
        // Snom 710: no firmware target.
        c("snom/snom710.htm", "/snom710.htm", SNOM_710),
        c("snom/000413741767.xml", "/snom/000413741767.xml", SNOM_710),
        c("snom/snom710-firmware.xml", "/snom710-firmware.xml", SNOM_710),
        // Yealink T46S (code 66): boot, common, device.
        c("yealink/001565aabbcc.boot", "/001565aabbcc.boot", YEALINK_T46S),
        c("yealink/y000000000000.boot", "/y000000000000.boot", YEALINK_T46S),
        fw(
            "yealink/y000000000066.cfg",
            "/y000000000066.cfg",
            YEALINK_T46S,
            "66.86.0.15",
            "http://prov.example.com:8080/firmware/yealink/T46S/66.86.0.15/T46S(T48S,T42S,T41S)-66.86.0.15.rom",
        ),
        fw(
            "yealink/001565aabbcc.cfg",
            "/001565aabbcc.cfg",
            YEALINK_T46S,
            "66.86.0.15",
            "http://prov.example.com:8080/firmware/yealink/T46S/66.86.0.15/T46S(T48S,T42S,T41S)-66.86.0.15.rom",
        ),
        // Yealink T46G (code 28), legacy pair without a User-Agent for the common file.
        c("yealink/y000000000028.cfg", "/y000000000028.cfg", ""),
        c("yealink/0015654aa937.cfg", "/0015654aa937.cfg", YEALINK_T46G),
        // Gigaset P-series (Snom-based).
        c("gigaset/GigasetP82x.htm", "/GigasetP82x.htm", ""),
        fw(
            "gigaset/GigasetP82x-7C2F80123456.htm",
            "/GigasetP82x-7C2F80123456.htm",
            "",
            "10.1.198.162",
            "https://profile.gigaset.net/device/P82x/GigasetP82x-10.1.198.162-SIP-r.swu",
        ),
        fw(
            "gigaset/GigasetP82x-firmware.htm",
            "/GigasetP82x-firmware.htm",
            "",
            "10.1.198.162",
            "https://profile.gigaset.net/device/P82x/GigasetP82x-10.1.198.162-SIP-r.swu",
        ),
        // Gigaset N870 (Nx70): provisioning.xml then <MAC>.xml.
        c("gigaset/provisioning.xml", "/provisioning.xml", GIGASET_N870),
        fw(
            "gigaset/7C2F80E0D605.xml",
            "/7C2F80E0D605.xml",
            GIGASET_N870,
            "2.65.0",
            "http://prov.example.com:8080/firmware/gigaset/N870/2.65.0/n870.bin",
        ),
        // Gigaset N510 (legacy ProviderFrame).
        c("gigaset/7C2F804DF9A9.xml", "/7C2F804DF9A9.xml", GIGASET_N510),
        // Digium D40 (User-Agent) and a D65 known from the inventory under /digium/.
        fw(
            "digium/000fd3aabbcc.cfg",
            "/000fd3aabbcc.cfg",
            DIGIUM_D40,
            "2.8.1",
            "http://prov.example.com:8080/firmware/digium/D40/2.8.1/2_8_1_D40_firmware.eff",
        ),
        Case {
            golden: "digium/000fd3aabbcd.cfg",
            path: "/Digium/000fd3aabbcd.cfg",
            ua: "",
            firmware: None,
            known: Some(("digium", "D65")),
        },
        // Polycom VVX 400 and SoundPoint IP 335.
        c("polycom/000000000000.cfg", "/000000000000.cfg", POLYCOM_VVX),
        fw(
            "polycom/0004f2aabbcc.cfg",
            "/0004f2aabbcc.cfg",
            POLYCOM_VVX,
            "4.1.4.7430",
            "http://prov.example.com:8080/firmware/polycom/VVX_400/4.1.4.7430/sip.ld",
        ),
        c("polycom/0004f2aabbcc-phone.cfg", "/0004f2aabbcc-phone.cfg", POLYCOM_VVX),
        c("polycom/64167faabbcc-phone.cfg", "/64167faabbcc-phone.cfg", POLYCOM_SPIP),
        // Cisco SPA508G and MPP 8841.
        c("cisco/spa508G.cfg", "/spa508G.cfg", CISCO_SPA),
        fw(
            "cisco/0002fdff2103.xml",
            "/cisco/0002fdff2103.xml",
            CISCO_SPA,
            "7.6.2",
            "http://prov.example.com:8080/firmware/cisco/SPA508G/7.6.2/spa50x-30x-7-6-2.bin",
        ),
        c("cisco/8841.xml", "/8841.xml", CISCO_MPP),
        c("cisco/00562b043615.xml", "/00562b043615.xml", CISCO_MPP),
        // Grandstream GXP2200 and GXP2170.
        fw(
            "grandstream/cfg000b82462d97.xml",
            "/cfg000b82462d97.xml",
            GS_GXP2200,
            "1.0.3.20",
            "http://prov.example.com:8080/firmware/grandstream/GXP2200/1.0.3.20/gxp2200fw.bin",
        ),
        c("grandstream/cfggxp2170.xml", "/cfggxp2170.xml", GS_GXP2170),
        c("grandstream/cfg000b82aabbcc.xml", "/cfg000b82aabbcc.xml", GS_GXP2170),
        c("grandstream/cfg.xml", "/cfg.xml", ""),
        // Fanvil X4 and X6U Pro.
        c("fanvil/f0X4hw1.100.cfg", "/f0X4hw1.100.cfg", FANVIL_X4),
        fw(
            "fanvil/0c383e07e16c.cfg",
            "/0c383e07e16c.cfg",
            FANVIL_X4,
            "2.12.1",
            "http://prov.example.com:8080/firmware/fanvil/X4/2.12.1/x4-2.12.1.z",
        ),
        c("fanvil/0c383e07e16d.cfg", "/0c383e07e16d.cfg", FANVIL_X6U),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vendors")
}

fn site() -> SiteConfig {
    let text = std::fs::read_to_string(dir().join("site.toml")).unwrap();
    let (config, diags) = validate_text("site.toml", &text);
    assert!(diags.is_empty(), "{diags:?}");
    config.unwrap()
}

fn render(config: &SiteConfig, case: &Case) -> Vec<u8> {
    let req = DeviceRequest {
        path: case.path.into(),
        user_agent: case.ua.into(),
        ..Default::default()
    };
    let known = case.known.map(|(v, m)| Known {
        vendor: Some(v.into()),
        model: Some(m.into()),
    });
    let id = identify(&req, known.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", case.path));
    let vendor = case.golden.split('/').next().unwrap();
    assert_eq!(id.vendor, vendor, "{}", case.path);
    let settings = resolve_for(config, &id);
    let fw = case.firmware.map(|(version, url)| FirmwareRef {
        version: version.into(),
        url: url.into(),
    });
    render_file(
        config,
        &id,
        &settings,
        fw.as_ref(),
        &config.provisioning.base_url,
        &ShippedTemplates,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.path))
    .body
}

#[test]
fn golden_files() {
    let config = site();
    let bless = std::env::var_os("AUTOPROV_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let out = render(&config, &case);
        let path = dir().join(case.golden);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &out).unwrap();
            continue;
        }
        let want = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (AUTOPROV_BLESS=1 writes it)", path.display()));
        if out != want {
            failures.push(format!(
                "{} differs from {}:\n--- got\n{}\n--- want\n{}",
                case.path,
                case.golden,
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want)
            ));
        }
        // Unchanged input, unchanged bytes.
        assert_eq!(
            out,
            render(&config, &case),
            "{} is not deterministic",
            case.path
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn at_least_two_models_per_vendor() {
    use std::collections::{BTreeMap, BTreeSet};
    let config = site();
    let mut models: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for case in cases() {
        let req = DeviceRequest {
            path: case.path.into(),
            user_agent: case.ua.into(),
            ..Default::default()
        };
        let known = case.known.map(|(v, m)| Known {
            vendor: Some(v.into()),
            model: Some(m.into()),
        });
        let id = identify(&req, known.as_ref()).unwrap();
        let _ = resolve_for(&config, &id);
        models
            .entry(id.vendor)
            .or_default()
            .insert(id.model.unwrap_or_default());
    }
    for v in autoprov_core::vendors::registry() {
        let n = models.get(v.id()).map(BTreeSet::len).unwrap_or(0);
        assert!(n >= 2, "{} has golden files for {n} model(s)", v.id());
    }
}
