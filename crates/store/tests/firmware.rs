//! Firmware progress and the download log survive a round trip; updates are atomic.

use autoprov_core::firmware::{FirmwareFetch, FirmwareProgress};
use autoprov_store::Store;

fn fetch(device: &str, time: i64, range_start: u64) -> FirmwareFetch {
    FirmwareFetch {
        device: device.into(),
        time,
        vendor: "snom".into(),
        model: "D785".into(),
        version: "10.1".into(),
        sha256: "a".repeat(64),
        range_start,
        peer: "10.0.0.5".into(),
    }
}

#[tokio::test]
async fn progress_round_trip_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let location = autoprov_store::testing::test_database(&dir.path().join("db.sqlite")).await;
    let store = Store::connect(&location).await.unwrap();
    assert_eq!(store.firmware_progress("000413741767").await.unwrap(), None);

    let (p, out) = store
        .firmware_update("000413741767", |p| {
            p.vendor = "snom".into();
            p.model = "D785".into();
            p.groups = vec!["pilot".into(), "é, \"x\"".into()];
            p.reported_version = Some("10.1".into());
            p.reported_at = Some(5);
            p.image_version = Some("10.2".into());
            p.image_sha256 = Some("b".repeat(64));
            p.fetches = 3;
            p.first_fetch_at = Some(6);
            p.last_fetch_at = Some(7);
            p.flagged_at = Some(7);
            42
        })
        .await
        .unwrap();
    assert_eq!(out, 42);
    assert_eq!(p.device, "000413741767");
    let back = store
        .firmware_progress("000413741767")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, p);

    // the closure sees the stored record
    let (p2, seen) = store
        .firmware_update("000413741767", |p| {
            let seen = p.clone();
            p.fetches += 1;
            p.done_at = Some(9);
            seen
        })
        .await
        .unwrap();
    assert_eq!(seen, back);
    assert_eq!((p2.fetches, p2.done_at), (4, Some(9)));

    store.firmware_update("0004137417aa", |_| ()).await.unwrap();
    let all = store.firmware_progress_all().await.unwrap();
    let keys: Vec<&str> = all.iter().map(|p| p.device.as_str()).collect();
    assert_eq!(keys, ["000413741767", "0004137417aa"]);
    assert_eq!(all[1], FirmwareProgress::new("0004137417aa"));
}

#[tokio::test]
async fn concurrent_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let location = autoprov_store::testing::test_database(&dir.path().join("db.sqlite")).await;
    let store = Store::connect(&location).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.firmware_update("d", |p| p.fetches += 1).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let p = store.firmware_progress("d").await.unwrap().unwrap();
    assert_eq!(p.fetches, 20);
}

#[tokio::test]
async fn fetch_log_keeps_the_newest_rows() {
    let store = Store::open_memory().await.unwrap();
    for t in 0..5 {
        store
            .firmware_log_fetch(&fetch("a", t, 0), 3)
            .await
            .unwrap();
    }
    store
        .firmware_log_fetch(&fetch("b", 10, 1_000_000), 3)
        .await
        .unwrap();
    let a = store.firmware_fetches("a").await.unwrap();
    assert_eq!(a.iter().map(|f| f.time).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(a[0], fetch("a", 2, 0));
    assert_eq!(
        store.firmware_fetches("b").await.unwrap(),
        [fetch("b", 10, 1_000_000)]
    );
}
