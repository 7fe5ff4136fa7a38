//! A device's life: first contact without arguments, staging, update phase, CHECK good —
//! with the database checked at each step — and the reference captures over HTTP.

use crate::helpers::*;

#[tokio::test]
async fn device_goes_from_first_contact_to_check_good() {
    let app = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    let sn = "00-90-33-30-00-af";
    // The operator configures only the bare URL; the device calls it as is.
    let mut dev = Device::new(&app.url("/upd/update.php"));

    // 1. No arguments: the server rewrites the URL, nothing is stored (no sn yet).
    let s = dev.poll(&app.client).await;
    assert!(
        s.contains("# missing query args: type, sn, hwid, ip"),
        "{s}"
    );
    assert!(
        dev.url
            .contains("/upd/update.php?polling=5&phase=staging&type=#t&sn=#m&hwid=#h&ip=#i"),
        "{}",
        dev.url
    );
    assert!(app.store.load(sn).await.unwrap().is_none());

    // 2. First real contact: staging snippet, firmware, fast polling, next phase.
    let s = dev.poll(&app.client).await;
    assert!(
        s.contains("# begin script 'scripts/staging-all-default.txt'"),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "mod cmd UP0 prot http://{}/upd/fw/137640/ ser 137640",
            app.addr
        )),
        "{s}"
    );
    assert!(dev.url.contains("phase=update"), "{}", dev.url);
    assert_eq!(dev.prot.as_deref(), Some("137640"));
    assert_eq!(dev.resets, 1);
    let st = app.store.load(sn).await.unwrap().expect("state stored");
    assert_eq!(st.device.phase.as_deref(), Some("staging"));
    assert_eq!(st.phase.as_deref(), Some("staging"));
    assert_eq!(st.nextphase.as_deref(), Some("update"));
    assert_eq!(st.device.hwid.as_deref(), Some("IP232-30-00-af"));
    assert_eq!(st.device.realip.as_deref(), Some("10.0.0.5"));
    assert_eq!(st.device.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(st.firmware.requested.as_deref(), Some("137640"));
    assert_eq!(st.requested.as_deref(), Some("137640bootcode"));
    assert_eq!(st.scripts.len(), 1);
    assert_eq!(st.scripts[0].filename, "scripts/staging-all-default.txt");
    assert!(st.msgs.iter().any(|m| m.msg.starts_with("phase: staging")));

    // 3. Update phase: the update snippets, slow polling, the CHECK serial.
    let s = dev.poll(&app.client).await;
    assert!(
        s.contains("# begin script 'scripts/update-phone-default.txt'"),
        "{s}"
    );
    assert!(s.contains("# firmware 137640 good"), "{s}");
    assert!(s.contains("# turn off fast polling"), "{s}");
    let check = dev.check.clone().expect("CHECK serial set");
    let st = app.store.load(sn).await.unwrap().unwrap();
    assert_eq!(st.device.phase.as_deref(), Some("update"));
    assert_eq!(st.phase.as_deref(), Some("update"));
    assert_eq!(st.nextphase, None);
    assert_eq!(st.firmware.build.as_deref(), Some("137640"));
    assert!(st
        .scripts
        .iter()
        .any(|x| x.filename == "scripts/update-phone-default.txt"));

    // 4. Unchanged snippets: nothing delivered, the CHECK serial is good.
    let s = dev.poll(&app.client).await;
    assert!(
        s.contains(&format!(
            "# not delivering any snippets - CHECK serial {check} is good"
        )),
        "{s}"
    );
    assert!(!s.contains("# begin script"), "{s}");
    let seen_before = st.seen;
    let st = app.store.load(sn).await.unwrap().unwrap();
    assert!(st.seen >= seen_before);
    assert_eq!(st.device.phase.as_deref(), Some("update"));

    // 5. A snippet changes: delivered again (after the grace period, here 0 s).
    write_script(
        &app.site(),
        "scripts/update-all-hq.txt",
        "config add PHONE SIG /coder G722,20,\n",
        5,
    );
    let mut hq = Device::new(&dev.url);
    hq.url = dev.url.clone() + "&env=hq";
    hq.prot = dev.prot.clone();
    hq.boot = dev.boot.clone();
    hq.check = dev.check.clone();
    let s = hq.poll(&app.client).await;
    assert!(s.contains("config add PHONE SIG /coder G722,20,"), "{s}");
    assert_ne!(
        hq.check, dev.check,
        "a changed snippet gives a new CHECK serial"
    );
}

#[tokio::test]
async fn reference_captures_over_http() {
    let app = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    assert_answers_like_reference(&app).await;
}

#[tokio::test]
async fn prefix_and_clean_paths_answer_like_update_php() {
    let app = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    let q = "?type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";
    let (s1, plain) = app.get(&format!("/update.php{q}")).await;
    let (s2, prefixed) = app.get(&format!("/mtls/update/update.php{q}")).await;
    let (s3, clean) = app.get(&format!("/innovaphone/update{q}")).await;
    assert_eq!((s1, s2, s3), (200, 200, 200));
    // The base URL follows the path the device used.
    assert!(
        prefixed.contains(&format!("http://{}/mtls/update/fw/137640/", app.addr)),
        "{prefixed}"
    );
    assert!(
        clean.contains(&format!("http://{}/innovaphone/fw/137640/", app.addr)),
        "{clean}"
    );
    assert_eq!(
        plain
            .replace(&format!("{}/", app.addr), "H/")
            .lines()
            .count(),
        prefixed.lines().count()
    );
}

#[tokio::test]
async fn firmware_is_served_under_every_prefix() {
    let app = TestApp::spawn(SCENARIO_A, |site| {
        std::fs::create_dir_all(site.join("fw/137640")).unwrap();
        std::fs::write(site.join("fw/137640/ip232.bin"), b"FIRMWARE-BYTES").unwrap();
    })
    .await;
    for p in ["/fw/137640/ip232.bin", "/upd/fw/137640/ip232.bin"] {
        let r = app.client.get(app.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"FIRMWARE-BYTES");
    }
    let r = app
        .client
        .get(app.url("/fw/137640/missing.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn snippet_bytes_reach_the_device_unchanged() {
    let toml = "[master]\ninfo = \"\"\n[times]\ngrace = 0\n";
    let app = TestApp::spawn(toml, |site| {
        let p = site.join("scripts/update-all-default.txt");
        // ISO-8859-1 "ä", then UTF-8 "ü": both must go out as they are on disk.
        std::fs::write(
            &p,
            b"config add CMD0 /name M\xe4rz\nconfig add CMD0 /loc \xc3\xbc\n",
        )
        .unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
    })
    .await;
    let r = app
        .client
        .get(app.url("/update.php?type=IP232&sn=00-90-33-30-00-af&hwid=h&ip=1.2.3.4"))
        .send()
        .await
        .unwrap();
    let body = r.bytes().await.unwrap().to_vec();
    let needle = b"config add CMD0 /name M\xe4rz\nconfig add CMD0 /loc \xc3\xbc\n\r\n";
    assert!(
        body.windows(needle.len()).any(|w| w == needle),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // The CHECK serial is the md5 of the raw trimmed lines, as the reference computes it.
    let text = String::from_utf8_lossy(&body);
    let sig = text
        .lines()
        .find_map(|l| l.strip_prefix("mod cmd UP1 check ser "))
        .unwrap()
        .trim();
    assert_eq!(sig, "baaa52fb33153f7470d5d6c8888869c4");
}
