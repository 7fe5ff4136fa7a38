//! The `show` columns of queries (seed 003): `<show title="NAT">concat(...)</show>` inside a
//! `<query>` is an XPath 1.0 expression over the device's state document; its string value is
//! shown under `title` in the device status list.
//!
//! The state document has the shape the reference keeps in `status/<sn>.xml`
//! ([`state_document`]):
//!
//! ```xml
//! <state seen="T" phase="update" nextphase="" skipnext="T" requested="137640bootcode">
//!   <device sn="…" type="IP232" classes="phone, ip232" ip="…" rp="false" … var-x="T"/>
//!   <firmware build="…" requested="…" requested-at="T"/>
//!   <bootcode build="…" requested-at="T"/>
//!   <msgs time="T" msg="…"/> …
//!   <config filename="…" delivered="T" version="T"/> …
//!   <queries><media seen="T"><info …>…</info></media> …</queries>
//! </state>
//! ```
//!
//! so that `/state/queries/<query-id>/<root of the uploaded XML>/...` selects what the device
//! sent. A query result that is not well-formed XML (or whose id is not an XML name) is left
//! out of the document; it never makes the whole evaluation fail.
//!
//! Evaluation uses sxd-document/sxd-xpath (real XPath 1.0: `concat`, predicates, node-set to
//! string conversion by the first node in document order). Their documents are not `Send`, so
//! everything happens inside the sync functions here. An expression that does not compile, or
//! fails at run time, gives an empty cell, never a panic; [`check_expression`] is what
//! `autoprov check` reports.

use sxd_document::dom::{ChildOfElement, Document, Element};
use sxd_document::Package;
use sxd_xpath::{Context, Factory, XPath};

use crate::config::SiteConfig;
use crate::state::DeviceState;

/// One show column: its title and XPath expression, in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowColumn {
    /// The query it belongs to.
    pub query: String,
    pub title: String,
    pub xpath: String,
}

/// All show columns of all queries, in configuration order.
pub fn show_columns(config: &SiteConfig) -> Vec<ShowColumn> {
    config
        .queries
        .query
        .iter()
        .flat_map(|q| {
            q.show.iter().map(move |s| ShowColumn {
                query: q.id.clone(),
                title: s.title.clone(),
                xpath: s.xpath.clone(),
            })
        })
        .collect()
}

/// Compile one expression: `Err` with the parser's message when it is not XPath 1.0, or when
/// it is empty.
fn compile(factory: &Factory, expr: &str) -> Result<XPath, String> {
    match factory.build(expr) {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Err("the expression is empty".into()),
        Err(e) => Err(words(&e.to_string())),
    }
}

/// sxd-xpath's error names (`ArgumentMissing`, `TrailingSlash`) as words: "argument missing".
fn words(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push(' ');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `expr` compiles as XPath 1.0; the error worded for `autoprov check`.
pub fn check_expression(expr: &str) -> Result<(), String> {
    compile(&Factory::new(), expr).map(|_| ())
}

/// The show values of one device, one per column (empty where the data is missing or the
/// expression is bad).
pub fn evaluate(state: &DeviceState, columns: &[ShowColumn]) -> Vec<String> {
    evaluate_all(std::slice::from_ref(state), columns)
        .pop()
        .unwrap_or_default()
}

/// The show values of several devices: the expressions are compiled once for all of them.
pub fn evaluate_all(states: &[DeviceState], columns: &[ShowColumn]) -> Vec<Vec<String>> {
    if columns.is_empty() {
        return states.iter().map(|_| Vec::new()).collect();
    }
    let factory = Factory::new();
    let compiled: Vec<Option<XPath>> = columns
        .iter()
        .map(|c| compile(&factory, &c.xpath).ok())
        .collect();
    let context = Context::new();
    states
        .iter()
        .map(|state| {
            let package = state_package(state);
            let doc = package.as_document();
            compiled
                .iter()
                .map(|x| match x {
                    Some(x) => match x.evaluate(&context, doc.root()) {
                        Ok(v) => value_string(v),
                        Err(_) => String::new(),
                    },
                    None => String::new(),
                })
                .collect()
        })
        .collect()
}

/// XPath's `string()` of a result (`-0` prints as `0` as XPath wants).
fn value_string(v: sxd_xpath::Value<'_>) -> String {
    match v {
        sxd_xpath::Value::Number(0.0) => "0".into(),
        v => v.string(),
    }
}

/// The state document of a device as XML text (for display and debugging).
pub fn state_document(state: &DeviceState) -> String {
    let package = state_package(state);
    let mut out = Vec::new();
    match sxd_document::writer::format_document(&package.as_document(), &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => String::new(),
    }
}

fn opt(el: Element<'_>, name: &str, v: &Option<String>) {
    if let Some(v) = v {
        el.set_attribute_value(name, v);
    }
}

fn opt_num(el: Element<'_>, name: &str, v: Option<i64>) {
    if let Some(v) = v {
        el.set_attribute_value(name, &v.to_string());
    }
}

/// Build the state document (see the module documentation).
fn state_package(s: &DeviceState) -> Package {
    let package = Package::new();
    {
        let doc = package.as_document();
        let root = doc.create_element("state");
        doc.root().append_child(root);
        root.set_attribute_value("seen", &s.seen.to_string());
        opt(root, "phase", &s.phase);
        opt(root, "nextphase", &s.nextphase);
        opt_num(root, "skipnext", s.skipnext);
        opt(root, "requested", &s.requested);

        let d = &s.device;
        let dev = doc.create_element("device");
        root.append_child(dev);
        dev.set_attribute_value("sn", &s.sn);
        opt(dev, "type", &d.device_type);
        opt(dev, "classes", &d.classes);
        opt(dev, "ip", &d.ip);
        dev.set_attribute_value("rp", if d.rp { "true" } else { "false" });
        opt(dev, "proxy", &d.proxy);
        opt(dev, "realip", &d.realip);
        opt(dev, "hwid", &d.hwid);
        opt(dev, "phase", &d.phase);
        opt(dev, "environments", &d.environments);
        opt_num(dev, "backup", d.backup);
        opt(dev, "certstat", &d.certstat);
        opt(dev, "requestDownloaded", &d.request_downloaded);
        for (name, t) in &d.vars {
            // The stamps are `var-<name>` attributes; a name that cannot be one is left out.
            let attr = if name.starts_with("var-") {
                name.clone()
            } else {
                format!("var-{name}")
            };
            if is_xml_name(&attr) {
                dev.set_attribute_value(attr.as_str(), &t.to_string());
            }
        }
        opt(dev, "vendor", &s.vendor);
        opt(dev, "model", &s.model);

        let fw = doc.create_element("firmware");
        root.append_child(fw);
        opt(fw, "build", &s.firmware.build);
        opt(fw, "requested", &s.firmware.requested);
        opt_num(fw, "requested-at", s.firmware.requested_at);

        let boot = doc.create_element("bootcode");
        root.append_child(boot);
        opt(boot, "build", &s.bootcode.build);
        opt_num(boot, "requested-at", s.bootcode.requested_at);

        for m in &s.msgs {
            let e = doc.create_element("msgs");
            root.append_child(e);
            e.set_attribute_value("time", &m.time.to_string());
            e.set_attribute_value("msg", &m.msg);
        }
        for c in &s.scripts {
            let e = doc.create_element("config");
            root.append_child(e);
            e.set_attribute_value("filename", &c.filename);
            e.set_attribute_value("delivered", &c.delivered.to_string());
            e.set_attribute_value("version", &c.version.to_string());
        }

        let queries = doc.create_element("queries");
        root.append_child(queries);
        for q in &s.queries {
            if !is_xml_name(&q.id) {
                continue;
            }
            let wrapped = format!("<{id}>{}</{id}>", strip_prolog(&q.body), id = q.id);
            let Ok(parsed) = sxd_document::parser::parse(&wrapped) else {
                continue;
            };
            let pdoc = parsed.as_document();
            let Some(top) = pdoc.root().children().into_iter().find_map(|c| c.element()) else {
                continue;
            };
            let e = copy_element(doc, top);
            e.set_attribute_value("seen", &q.seen.to_string());
            queries.append_child(e);
        }
    }
    package
}

/// The body without a leading byte order mark and XML declaration (which cannot stand inside
/// the wrapping element).
fn strip_prolog(body: &str) -> &str {
    let b = body.trim_start_matches('\u{feff}').trim_start();
    if b.starts_with("<?xml") {
        if let Some(end) = b.find("?>") {
            return &b[end + 2..];
        }
    }
    body
}

/// Copy `src` (of another document) and its subtree into `doc`.
fn copy_element<'d>(doc: Document<'d>, src: Element<'_>) -> Element<'d> {
    let name = src.name();
    let e = doc.create_element(name);
    if let Some(p) = src.preferred_prefix() {
        e.set_preferred_prefix(Some(p));
    }
    for a in src.attributes() {
        e.set_attribute_value(a.name(), a.value());
    }
    for c in src.children() {
        match c {
            ChildOfElement::Element(child) => e.append_child(copy_element(doc, child)),
            ChildOfElement::Text(t) => e.append_child(doc.create_text(t.text())),
            ChildOfElement::Comment(t) => e.append_child(doc.create_comment(t.text())),
            ChildOfElement::ProcessingInstruction(p) => {
                e.append_child(doc.create_processing_instruction(p.target(), p.value()))
            }
        }
    }
    e
}

/// Whether `s` is an XML name (the ASCII subset plus any non-ASCII letter; no `:`).
fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || "_-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(title: &str, xpath: &str) -> ShowColumn {
        ShowColumn {
            query: "q".into(),
            title: title.into(),
            xpath: xpath.into(),
        }
    }

    /// The seed's media and registration queries, with what a device uploads for them.
    fn device() -> DeviceState {
        let mut s = DeviceState::new("00-90-33-30-00-af", 1700000000);
        s.device.device_type = Some("IP232".into());
        s.device.hwid = Some("IP232-30-00-af".into());
        s.device.ip = Some("172.16.0.5".into());
        s.firmware.build = Some("137640".into());
        s.set_query(
            "media",
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<info stun=\"stun.example.com\" turn=\"turn.example.com\" \
             turn-user=\"alice\"><nat result=\"Full Cone\" public-addr=\"203.0.113.7:5060\"/></info>",
            1700000100,
        );
        s.set_query(
            "registration",
            "<info>\n  <reg id=\"1\" state=\"Down\" h323=\"other\" e164=\"99\" gk-addr=\"10.0.0.9\" gk-id=\"X\"/>\n  \
             <reg id=\"0\" state=\"Up\" h323=\"Front desk\" e164=\"201\" gk-addr=\"10.0.0.1\" gk-id=\"PBX1\"/>\n</info>",
            1700000100,
        );
        s.set_query(
            "certificates",
            "<info><servercert><certificate subject_cn=\"IP232-30-00-af\" issuer_cn=\"innovaphone Device Certification Authority 2\" \
             not_before=\"2020\" not_after=\"2040\"/></servercert><requests/></info>",
            1700000100,
        );
        s
    }

    fn seed_columns() -> Vec<ShowColumn> {
        vec![
            col("NAT", "concat(/state/queries/media/info/nat/@result, ' (', /state/queries/media/info/nat/@public-addr, ')')"),
            col("Server", "concat('STUN: ', /state/queries/media/info/@stun, ' TURN: ', /state/queries/media/info/@turn, ' (', /state/queries/media/info/@turn-user, ')')"),
            col("State: User/Number", "concat(/state/queries/registration/info/reg[@id = \"0\"]/@state, ': ' , /state/queries/registration/info/reg[@id = \"0\"]/@h323, '/', /state/queries/registration/info/reg[@id = \"0\"]/@e164)"),
            col("PBX/ID", "concat(/state/queries/registration/info/reg[@id = \"0\"]/@gk-addr, '/', /state/queries/registration/info/reg[@id = \"0\"]/@gk-id)"),
            col("Subject", "/state/queries/certificates/info/servercert/certificate/@subject_cn"),
            col("Issuer", "/state/queries/certificates/info/servercert/certificate/@issuer_cn"),
        ]
    }

    #[test]
    fn seed_examples() {
        let got = evaluate(&device(), &seed_columns());
        assert_eq!(
            got,
            vec![
                "Full Cone (203.0.113.7:5060)",
                "STUN: stun.example.com TURN: turn.example.com (alice)",
                "Up: Front desk/201",
                "10.0.0.1/PBX1",
                "IP232-30-00-af",
                "innovaphone Device Certification Authority 2",
            ]
        );
    }

    #[test]
    fn state_attributes_and_node_sets() {
        let cols = [
            col("first reg", "/state/queries/registration/info/reg/@h323"),
            col("element", "/state/queries/registration/info"),
            col("type", "/state/device/@type"),
            col("fw", "string(/state/firmware/@build)"),
            col("seen", "/state/queries/media/@seen"),
            col("count", "count(/state/queries/registration/info/reg)"),
            col("half", "1 div 2"),
            col("sum", "sum(/state/queries/registration/info/reg/@e164)"),
            col("bool", "/state/device/@rp = 'false'"),
            col("nan", "number('x')"),
            col("zero", "-0"),
        ];
        let got = evaluate(&device(), &cols);
        assert_eq!(got[0], "other");
        // The string value of an element: its descendant text (here whitespace only).
        assert_eq!(got[1].trim(), "");
        assert_eq!(got[2], "IP232");
        assert_eq!(got[3], "137640");
        assert_eq!(got[4], "1700000100");
        assert_eq!(got[5], "2");
        assert_eq!(got[6], "0.5");
        assert_eq!(got[7], "300");
        assert_eq!(got[8], "true");
        assert_eq!(got[9], "NaN");
        assert_eq!(got[10], "0");
    }

    #[test]
    fn missing_data_and_bad_expressions_are_empty() {
        let mut s = DeviceState::new("00-90-33-30-00-b0", 1);
        // Not well-formed: left out, the other query still counts.
        s.set_query("media", "<info><nat result=\"x\"></info>", 2);
        s.set_query("admin", "<info name=\"Desk\"/>", 2);
        // Not an XML name: left out.
        s.set_query("1x", "<info/>", 2);
        let cols = [
            col("NAT", "concat(/state/queries/media/info/nat/@result, ' (', /state/queries/media/info/nat/@public-addr, ')')"),
            col("none", "/state/queries/registration/info/reg[@id = \"0\"]/@state"),
            col("bad", "concat(/state/queries/media/info/nat/@result,"),
            col("unknown fn", "nosuch(1)"),
            col("empty", ""),
            col("admin", "/state/queries/admin/info/@name"),
        ];
        assert_eq!(evaluate(&s, &cols), vec![" ()", "", "", "", "", "Desk"]);
        assert_eq!(
            check_expression("concat(/a,"),
            Err("argument missing".to_string())
        );
        assert!(check_expression("").is_err());
        assert!(check_expression("/state/queries/admin/info/@name").is_ok());
    }

    #[test]
    fn document_shape_and_many_devices() {
        let s = device();
        let xml = state_document(&s);
        assert!(xml.contains("<state seen='1700000000'"), "{xml}");
        assert!(xml.contains("<queries><media"), "{xml}");
        assert!(xml.contains("<media seen='1700000100'>"), "{xml}");
        let mut other = DeviceState::new("00-90-33-30-00-b1", 5);
        other.set_query("admin", "<info name=\"Lobby\"/>", 6);
        let cols = [
            col("Admin", "/state/queries/admin/info/@name"),
            seed_columns()[0].clone(),
        ];
        let all = evaluate_all(&[s, other], &cols);
        assert_eq!(all[0], vec!["", "Full Cone (203.0.113.7:5060)"]);
        assert_eq!(all[1], vec!["Lobby", " ()"]);
        assert!(evaluate(&device(), &[]).is_empty());
    }

    #[test]
    fn columns_in_config_order() {
        let c = SiteConfig::from_toml_str(
            "[[queries.query]]\nid = \"media\"\ncmd = \"mod cmd MEDIA xml-info\"\n\
             show = [{ title = \"NAT\", xpath = \"/a\" }, { title = \"Server\", xpath = \"/b\" }]\n\
             [[queries.query]]\nid = \"registration\"\ncmd = \"x\"\n\
             [[queries.query.show]]\ntitle = \"PBX/ID\"\nxpath = \"/c\"\n",
        )
        .unwrap();
        let cols = show_columns(&c);
        let t: Vec<_> = cols
            .iter()
            .map(|c| (c.query.as_str(), c.title.as_str()))
            .collect();
        assert_eq!(
            t,
            vec![
                ("media", "NAT"),
                ("media", "Server"),
                ("registration", "PBX/ID")
            ]
        );
    }
}
