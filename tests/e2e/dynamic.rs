//! Dynamic snippets through the real server: templates over the device state and an external
//! hook command, with its timeout and failure mode.

use crate::helpers::*;

const DEV: &str = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";

#[tokio::test]
async fn templates_render_over_the_device_state() {
    let toml = r#"
[master]
info = ""
[status]
enabled = true
[times]
grace = 0
[scripting]
pre_template = "templates/pre.j2"
post_template = "templates/post.j2"
"#;
    let app = TestApp::spawn(toml, |site| {
        write_script(site, "scripts/update-all-default.txt", "config add STATIC /x 1\n", 3600);
        write_script(
            site,
            "templates/pre.j2",
            "config add CMD0 /name {{ hwid }}\n{% if 'phone' in classes %}config add PHONE /dyn 1{% endif %}\n",
            3600,
        );
        write_script(site, "templates/post.j2", "# post for {{ sn }}\n", 3600);
    })
    .await;
    let (_, r) = app.get(&format!("/update.php?{DEV}")).await;
    let pre = r
        .find("config add CMD0 /name IP232-30-00-af\r\nconfig add PHONE /dyn 1\r\n")
        .expect(&r);
    let file = r.find("config add STATIC /x 1").expect(&r);
    let post = r.find("# post for 00-90-33-30-00-af\r\n").expect(&r);
    assert!(pre < file && file < post, "{r}");
}

#[tokio::test]
async fn hook_command_can_suppress_standard_snippets() {
    let toml = r#"
[master]
info = ""
[times]
grace = 0
[scripting]
hook_command = ["sh", "-c", "cat >/dev/null; echo '{\"pre\": [\"config add HOOK /a 1\"], \"send_standard\": false}'"]
"#;
    let app = TestApp::spawn(toml, |site| {
        write_script(
            site,
            "scripts/update-all-default.txt",
            "config add STATIC /x 1\n",
            3600,
        );
    })
    .await;
    let (_, r) = app.get(&format!("/update.php?{DEV}")).await;
    assert!(r.contains("config add HOOK /a 1\r\n"), "{r}");
    assert!(!r.contains("config add STATIC /x 1"), "{r}");
}

#[tokio::test]
async fn hook_that_hangs_fails_clearly_within_the_timeout() {
    let toml = r#"
[master]
info = ""
[status]
enabled = true
[times]
grace = 0
[scripting]
hook_command = ["sh", "-c", "sleep 30"]
hook_timeout = 1
"#;
    let app = TestApp::spawn(toml, |site| {
        write_script(
            site,
            "scripts/update-all-default.txt",
            "config add STATIC /x 1\n",
            3600,
        );
    })
    .await;
    let t0 = std::time::Instant::now();
    let (s, r) = app.get(&format!("/update.php?{DEV}")).await;
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(s, 200);
    assert!(r.contains("# dynamic snippet hook failed: "), "{r}");
    assert!(r.trim_end().ends_with("not delivering any snippets"), "{r}");
    assert!(!r.contains("config add STATIC"), "{r}");
    assert!(!r.contains("config add UP1 /url"), "{r}");
    let st = app.store.load("00-90-33-30-00-af").await.unwrap().unwrap();
    assert!(st
        .msgs
        .iter()
        .any(|m| m.msg.contains("dynamic snippet hook failed")));
}
