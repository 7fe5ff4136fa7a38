//! Backups uploaded by devices: stored only when changed, the newest N kept, chunked bodies.

use crate::helpers::*;

const URL: &str = "/update.php?mode=backup&hwid=IP232-30-00-af&sn=00-90-33-30-00-af";

fn files(app: &TestApp) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(app.site().join("backup/IP232-30-00-af"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|n| {
        n.split('.')
            .nth(1)
            .and_then(|i| i.parse::<u32>().ok())
            .unwrap_or(0)
    });
    v
}

#[tokio::test]
async fn same_body_twice_gives_one_file() {
    let app = TestApp::spawn(SCENARIO_A, |_| {}).await;
    let body = "config change CMD0 /name x\r\nconfig change PHONE SIG /coder G711\r\nvars create UPDATE/CHECK p 1\r\nconfig change UP1 /url x\r\n";
    let (s, r1) = app.put(URL, body).await;
    assert_eq!(s, 200);
    assert_eq!(
        r1,
        "# no saved files for IP232-30-00-af (backup/IP232-30-00-af/IP232-30-00-af.*.txt)\r\n# saving backup/IP232-30-00-af/IP232-30-00-af.0.txt\r\n"
    );
    let (_, r2) = app.put(URL, body).await;
    assert!(
        r2.starts_with("# no change (newest backup/IP232-30-00-af/IP232-30-00-af.0.txt) "),
        "{r2}"
    );
    assert_eq!(files(&app), vec!["IP232-30-00-af.0.txt"]);
    let stored = std::fs::read_to_string(
        app.site()
            .join("backup/IP232-30-00-af/IP232-30-00-af.0.txt"),
    )
    .unwrap();
    assert_eq!(
        stored,
        "config change CMD0 /name x\r\nconfig change PHONE SIG /coder G711"
    );
    let st = app
        .store
        .load("00-90-33-30-00-af")
        .await
        .unwrap()
        .expect("state");
    assert!(st.device.backup.is_some());
}

#[tokio::test]
async fn eleven_differing_bodies_keep_the_newest_ten() {
    let app = TestApp::spawn(SCENARIO_A, |_| {}).await;
    for i in 0..11 {
        let (s, r) = app
            .put(URL, format!("config change CMD0 /name device{i}\r\n"))
            .await;
        assert_eq!(s, 200, "{r}");
        assert!(
            r.contains(&format!(
                "# saving backup/IP232-30-00-af/IP232-30-00-af.{i}.txt"
            )),
            "{r}"
        );
    }
    let names = files(&app);
    assert_eq!(names.len(), 10, "{names:?}");
    assert_eq!(names.first().unwrap(), "IP232-30-00-af.1.txt");
    assert_eq!(names.last().unwrap(), "IP232-30-00-af.10.txt");
    let newest = std::fs::read_to_string(
        app.site()
            .join("backup/IP232-30-00-af/IP232-30-00-af.10.txt"),
    )
    .unwrap();
    assert_eq!(newest, "config change CMD0 /name device10");
}

#[tokio::test]
async fn chunked_body_is_accepted() {
    let app = TestApp::spawn(SCENARIO_A, |_| {}).await;
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![
        Ok("config change CMD0 "),
        Ok("/name chunked\r\n"),
        Ok("config change X /y 1\r\n"),
    ];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (s, r) = app.put(URL, body).await;
    assert_eq!(s, 200, "{r}");
    let stored = std::fs::read_to_string(
        app.site()
            .join("backup/IP232-30-00-af/IP232-30-00-af.0.txt"),
    )
    .unwrap();
    assert_eq!(
        stored,
        "config change CMD0 /name chunked\r\nconfig change X /y 1"
    );
}

#[tokio::test]
async fn query_results_are_stored_in_the_state() {
    let app = TestApp::spawn(SCENARIO_A, |_| {}).await;
    let (s, r) = app
        .put(
            "/update.php?mode=query&sn=00-90-33-30-00-af&id=admin",
            "<info name=\"Front desk\"/>",
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        r.starts_with("# queries admin for 00-90-33-30-00-af saved\r\n"),
        "{r}"
    );
    let st = app.store.load("00-90-33-30-00-af").await.unwrap().unwrap();
    assert_eq!(
        st.query("admin").unwrap().body,
        "<info name=\"Front desk\"/>"
    );
}
