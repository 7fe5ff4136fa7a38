//! The master device's `box_info.xml`: `<sys version="LABEL[prot]...[boot]...[hw]...">`.

/// Builds read from a `box_info.xml` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxInfo {
    pub label: String,
    pub prot: String,
    pub boot: String,
    pub hw: String,
}

/// Parse the document. Errors use the reference's wording.
pub fn parse_box_info(xml: &str, source: &str) -> Result<BoxInfo, String> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|_| format!("result from {source} not parsable"))?;
    let sys = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("sys"))
        .ok_or_else(|| "no <sys> tag in PBX info".to_string())?;
    let version = sys
        .attribute("version")
        .ok_or_else(|| "no version attribute in <sys> tag in PBX info".to_string())?;
    parse_version(version).ok_or_else(|| format!("cannot parse box info '{version}'"))
}

/// `(?<label>.*)\[(?<prot>[^]]*)\].*\[(?<boot>[^]]*)\].*\[(?<hw>[^]]*)\].*` with a greedy
/// label: the last three bracket groups are firmware, boot code and hardware. Dots are removed
/// from the firmware build.
pub fn parse_version(version: &str) -> Option<BoxInfo> {
    let re = regex::Regex::new(
        r"^(?s)(?P<label>.*)\[(?P<prot>[^\]]*)\].*\[(?P<boot>[^\]]*)\].*\[(?P<hw>[^\]]*)\].*",
    )
    .expect("static regex");
    let c = re.captures(version)?;
    Some(BoxInfo {
        label: c["label"].to_string(),
        prot: c["prot"].replace('.', ""),
        boot: c["boot"].to_string(),
        hw: c["hw"].to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_groups() {
        let b =
            parse_version("IP6010[13r2 dvl [137640]], Bootcode[137640], Hardware[108]").unwrap();
        assert_eq!(b.prot, "137640");
        assert_eq!(b.boot, "137640");
        assert_eq!(b.hw, "108");
        assert!(parse_version("no brackets").is_none());
    }

    #[test]
    fn document() {
        let x = r#"<info><sys version="IP811[13r3 [13.1234]], Bootcode[139000], Hardware[42]"/></info>"#;
        let b = parse_box_info(x, "u").unwrap();
        assert_eq!(b.prot, "131234");
        assert_eq!(
            parse_box_info("<info/>", "u").unwrap_err(),
            "no <sys> tag in PBX info"
        );
        assert!(parse_box_info("<<", "u")
            .unwrap_err()
            .contains("not parsable"));
    }
}
