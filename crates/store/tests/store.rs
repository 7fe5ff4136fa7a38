//! Integration tests of `autoprov-store` against real SQLite files in temporary directories.
//!
//! They check persistence only (round-trips, cascades, errors); device logic is tested in
//! `autoprov-core`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use autoprov_core::state::{
    BootState, DeliveredScript, DeviceInfo, DeviceState, FirmwareState, Message, QueryResult,
};
use autoprov_store::{FirmwareReport, Store, StoreError, StoreOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The store under test: a fresh PostgreSQL database when the test command started one
/// (`AUTOPROV_TEST_POSTGRES`), else an SQLite file in `dir`.
async fn open_test(dir: &tempfile::TempDir) -> Store {
    let location = autoprov_store::testing::test_database(&db(dir)).await;
    Store::connect(&location).await.unwrap()
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("autoprov.db")
}

/// A state with every field set, lists out of alphabetical order and awkward text.
fn full_state(sn: &str) -> DeviceState {
    DeviceState {
        sn: sn.to_string(),
        seen: 1_700_000_123,
        phase: Some("fw".into()),
        nextphase: Some("config".into()),
        skipnext: Some(-1),
        requested: Some("13r2 sr5 bootcode".into()),
        device: DeviceInfo {
            device_type: Some("IP232".into()),
            classes: Some("phone, IP232, IP2xx".into()),
            ip: Some("192.0.2.10".into()),
            rp: true,
            proxy: Some("10.0.0.1".into()),
            realip: Some("172.16.0.7".into()),
            hwid: Some("IP232-30-00-af".into()),
            phase: Some("scripts".into()),
            environments: Some("prod, lab".into()),
            backup: Some(1_699_999_000),
            certstat: Some("ok: CN=\"Ünïcødé\" <x>".into()),
            request_downloaded: Some("13r2/ip232.bin".into()),
            vars: vec![("zeta".into(), 5), ("alpha".into(), -7), ("mid".into(), 0)],
        },
        firmware: FirmwareState {
            build: Some("138725".into()),
            requested: Some("138800".into()),
            requested_at: Some(1_700_000_100),
        },
        bootcode: BootState {
            build: Some("138000".into()),
            requested_at: Some(0),
        },
        msgs: vec![
            Message {
                time: 30,
                msg: String::new().into(),
            },
            Message {
                time: 10,
                msg: "b: firmware requested".into(),
            },
            Message {
                time: 20,
                msg: "a: 'quoted' \"twice\" — ünïcødé ✓".into(),
            },
            Message {
                time: 10,
                msg: "b: firmware requested".into(),
            },
        ],
        scripts: vec![
            DeliveredScript {
                filename: "z-last.txt".into(),
                delivered: 100,
                version: 99,
            },
            DeliveredScript {
                filename: "a-first.txt".into(),
                delivered: 200,
                version: -3,
            },
        ],
        queries: vec![
            QueryResult {
                id: "reg".into(),
                seen: 300,
                body: "<info><sys name=\"Ünïcødé 'x'\" v='1'>&amp;ä€</sys></info>".into(),
            },
            QueryResult {
                id: "cfg".into(),
                seen: 301,
                body: "<?xml version=\"1.0\"?>\n<a b=\"&quot;\">日本語</a>".into(),
            },
        ],
        vendor: Some("yealink".into()),
        model: Some("T46S".into()),
        first_seen: Some(1_600_000_000),
        notes_upto: None,
    }
}

#[tokio::test]
async fn full_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    let s = full_state("00-90-33-30-00-af");
    store.save(&s).await.unwrap();
    let back = store.load(&s.sn).await.unwrap().expect("device stored");
    assert_eq!(back, s);

    // save after load round-trips exactly
    store.save(&back).await.unwrap();
    assert_eq!(store.load(&s.sn).await.unwrap().unwrap(), s);

    // a minimal state keeps its Nones and empty lists
    let bare = DeviceState::new("00-90-33-00-00-01", 5);
    store.save(&bare).await.unwrap();
    assert_eq!(store.load(&bare.sn).await.unwrap().unwrap(), bare);

    assert_eq!(store.load("unknown").await.unwrap(), None);
}

/// Releasing the idle connections' memory (a quiet server) keeps every connection usable,
/// also one that was busy in a transaction meanwhile.
#[tokio::test]
async fn released_memory_leaves_the_store_working() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    let s = full_state("00-90-33-30-00-b0");
    store.save(&s).await.unwrap();
    store.flush().await.unwrap();
    let listed = store.list().await.unwrap();
    store.release_memory().await;
    store.release_memory().await;
    assert_eq!(store.list().await.unwrap(), listed);
    let mut t = s.clone();
    t.add_msg("after release", 900);
    store.save(&t).await.unwrap();
    store.flush().await.unwrap();
    store.release_memory().await;
    assert_eq!(store.load(&t.sn).await.unwrap().unwrap(), t);
}

/// Lists of many devices read pages of rows without message logs: the pages cover every
/// device once, in order, including states still queued for writing.
#[tokio::test]
async fn shallow_pages_cover_every_device_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    let mut sns: Vec<String> = (0..11).map(|i| format!("00-90-33-30-01-{i:02x}")).collect();
    for sn in &sns {
        store.save(&full_state(sn)).await.unwrap();
    }
    sns.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_shallow_page(after.as_deref(), 4).await.unwrap();
        assert!(page.len() <= 4);
        for d in &page {
            assert!(
                d.msgs.is_empty() && d.scripts.is_empty(),
                "{}: shallow",
                d.sn
            );
            assert_eq!(d.device.device_type, full_state(&d.sn).device.device_type);
        }
        seen.extend(page.iter().map(|d| d.sn.clone()));
        if page.len() < 4 {
            break;
        }
        after = page.last().map(|d| d.sn.clone());
    }
    assert_eq!(seen, sns);
    let all: Vec<String> = store
        .list_shallow()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.sn)
        .collect();
    assert_eq!(all, sns);
    assert!(store
        .list_shallow_page(Some(sns.last().unwrap()), 4)
        .await
        .unwrap()
        .is_empty());
    // only those seen since a time, paged the same way
    let mut recent = full_state(&sns[5]);
    recent.seen += 100;
    store.save(&recent).await.unwrap();
    let mut late = full_state(&sns[9]);
    late.seen += 200;
    store.save(&late).await.unwrap();
    let since = recent.seen;
    let first = store.list_shallow_since_page(since, None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].sn, sns[5]);
    assert_eq!(first[0].seen, recent.seen);
    let rest = store
        .list_shallow_since_page(since, Some(&sns[5]), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|d| d.sn.as_str()).collect::<Vec<_>>(),
        [sns[9].as_str()]
    );
    assert!(store
        .list_shallow_since_page(late.seen + 1, None, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn save_twice_replaces_children() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    let mut s = full_state("sn1");
    store.save(&s).await.unwrap();

    s.msgs.drain(..2);
    s.add_msg("new", 400);
    s.device.vars = vec![("only".into(), 1)];
    s.scripts.clear();
    s.set_query("reg", "<new/>", 500);
    s.device.rp = false;
    s.phase = None;
    s.firmware.requested_at = None;
    store.save(&s).await.unwrap();

    let back = store.load("sn1").await.unwrap().unwrap();
    assert_eq!(back, s);
    assert_eq!(back.queries.last().unwrap().body, "<new/>");
    assert!(back.scripts.is_empty());
}

#[tokio::test]
async fn duplicate_keys_in_lists_keep_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    let mut s = DeviceState::new("dup", 1);
    s.queries = vec![
        QueryResult {
            id: "q".into(),
            seen: 1,
            body: "old".into(),
        },
        QueryResult {
            id: "other".into(),
            seen: 2,
            body: "x".into(),
        },
        QueryResult {
            id: "q".into(),
            seen: 3,
            body: "new".into(),
        },
    ];
    store.save(&s).await.unwrap();
    let back = store.load("dup").await.unwrap().unwrap();
    assert_eq!(back.queries, s.queries[1..].to_vec());
}

#[tokio::test]
async fn list_is_ordered_with_children() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    let b = full_state("b");
    let a = full_state("a");
    let mut c = DeviceState::new("c", 9);
    c.add_msg("", 9);
    for s in [&b, &c, &a] {
        store.save(s).await.unwrap();
    }
    let all = store.list().await.unwrap();
    assert_eq!(all, vec![a, b, c]);
}

#[tokio::test]
async fn touch_expire_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    for (sn, seen) in [("old1", 100), ("old2", 199), ("new", 200)] {
        let mut s = full_state(sn);
        s.seen = seen;
        store.save(&s).await.unwrap();
    }
    assert!(store.touch("old2", 500).await.unwrap());
    assert!(!store.touch("nobody", 500).await.unwrap());
    assert_eq!(store.load("old2").await.unwrap().unwrap().seen, 500);

    assert_eq!(store.expire(200).await.unwrap(), 1);
    assert_eq!(store.load("old1").await.unwrap(), None);
    assert_eq!(store.expire(200).await.unwrap(), 0);
    let left: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.sn)
        .collect();
    assert_eq!(left, ["new", "old2"]);

    assert!(store.delete("new").await.unwrap());
    assert!(!store.delete("new").await.unwrap());
    store.close().await;
    if autoprov_store::testing::test_postgres().is_some() {
        return; // the raw check below reads the SQLite file
    }

    // children went with their devices (checked on the raw file)
    let mut conn = SqliteConnectOptions::new()
        .filename(db(&dir))
        .connect()
        .await
        .unwrap();
    for table in ["device_vars", "device_scripts", "device_queries"] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE sn <> 'old2'");
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap();
        assert_eq!(n, 0, "orphans left in {table}");
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE sn = 'old2'");
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap();
        assert!(n > 0, "old2 lost rows in {table}");
    }
}

#[tokio::test]
async fn reopen_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let s = full_state("keep");
    {
        let store = Store::open(&path).await.unwrap();
        store.save(&s).await.unwrap();
        store.meta_set("last_cleanup", "1700000000").await.unwrap();
        store.meta_set("last_cleanup", "1700000500").await.unwrap();
        store.close().await;
    }
    let mut raw = SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    raw.close().await.unwrap();
    for _ in 0..2 {
        let store = Store::open(&path).await.unwrap();
        store.health().await.unwrap();
        assert_eq!(store.load("keep").await.unwrap().unwrap(), s);
        assert_eq!(
            store.meta_get("last_cleanup").await.unwrap().as_deref(),
            Some("1700000500")
        );
        assert_eq!(store.meta_get("missing").await.unwrap(), None);
        store.close().await;
    }
}

#[tokio::test]
async fn missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no").join("such").join("autoprov.db");
    let err = Store::open(&path).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::CannotOpen { .. }),
        "unexpected {err:?}"
    );
    assert!(text.contains("cannot open database"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("does not exist"), "{text}");
    assert!(!path.parent().unwrap().exists());
}

#[tokio::test]
async fn directory_in_place_of_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::CannotOpen { .. }),
        "unexpected {err:?}"
    );
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[tokio::test]
async fn locked_database_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let opts = StoreOptions {
        busy_timeout: Duration::from_millis(200),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&path, &opts).await.unwrap();
    store.save(&full_state("x")).await.unwrap();

    // another process holds the write lock
    let mut other = SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("UPDATE devices SET seen = 1")
        .execute(&mut other)
        .await
        .unwrap();

    let err = store.save(&full_state("y")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Locked { .. }),
        "unexpected {err:?}"
    );
    assert!(err.is_locked());
    let text = err.to_string();
    assert!(text.contains("locked"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");

    let err = store.touch("x", 5).await.unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");

    // once the other side lets go, writes work again
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    store.save(&full_state("y")).await.unwrap();
    assert_eq!(store.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn garbage_file_is_reported_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open(&path).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Damaged { .. }),
        "unexpected {err:?}"
    );
    assert!(err.to_string().contains("is damaged"), "{err}");
}

#[tokio::test]
async fn odd_values_written_by_others_do_not_break_loading() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open(&path).await.unwrap();
    store.save(&DeviceState::new("odd", 1)).await.unwrap();

    let mut other = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for sql in [
        "UPDATE devices SET seen = 'yesterday', skipnext = -42, backup = '17', \
         fw_requested_at = 12.9, rp = 'x', phase = X'C3BC6265', hwid = 7, \
         msgs = '[[-5, 12], \"junk\", [\"7\", null], [1]]' WHERE sn = 'odd'",
        "INSERT INTO device_queries (sn, id, seen, body, pos) VALUES ('odd', 'q', 'soon', 'b', 0)",
        "INSERT INTO meta (key, value) VALUES ('n', 5)",
    ] {
        sqlx::query(sql).execute(&mut other).await.unwrap();
    }
    other.close().await.unwrap();

    let s = store.load("odd").await.unwrap().unwrap();
    assert_eq!(s.seen, 0);
    assert_eq!(s.skipnext, Some(-42));
    assert_eq!(s.device.backup, Some(17));
    assert_eq!(s.firmware.requested_at, Some(12));
    assert!(!s.device.rp);
    assert_eq!(s.phase.as_deref(), Some("übe"));
    assert_eq!(s.device.hwid.as_deref(), Some("7"));
    assert_eq!(
        s.msgs,
        vec![
            Message {
                time: -5,
                msg: "12".into()
            },
            Message {
                time: 7,
                msg: String::new().into()
            }
        ]
    );
    assert_eq!(s.queries[0].seen, 0);
    assert_eq!(store.meta_get("n").await.unwrap().as_deref(), Some("5"));
    assert_eq!(store.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn memory_store_works() {
    let store = Store::open_memory().await.unwrap();
    let s = full_state("mem");
    store.save(&s).await.unwrap();
    store.health().await.unwrap();
    assert_eq!(store.load("mem").await.unwrap().unwrap(), s);
    assert_eq!(store.path(), ":memory:");
}

/// Handlers run on a multi-threaded runtime: every store future must be `Send`.
#[allow(dead_code)]
fn futures_are_send(store: &Store, s: &DeviceState) {
    fn send<T: Send>(_: T) {}
    send(Store::open(std::path::Path::new("x")));
    send(store.load("x"));
    send(store.save(s));
    send(store.list());
    send(store.delete("x"));
    send(store.touch("x", 1));
    send(store.expire(1));
    send(store.meta_get("k"));
    send(store.meta_set("k", "v"));
    send(store.health());
    fn sync_clone<T: Send + Sync + Clone + 'static>() {}
    sync_clone::<Store>();
    sync_clone::<StoreOptions>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<StoreError>();
}

#[tokio::test]
async fn write_behind_queues_saves_and_flushes_them_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        write_behind: Some(Duration::from_secs(3600)),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&db(&dir), &opts).await.unwrap();
    assert!(store.writes_behind());
    let mut s = full_state("00-90-33-30-00-af");
    store.save(&s).await.unwrap();
    // queued: this process sees it, the file does not have it yet
    assert_eq!(store.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(store.queued_states(), 1);
    let other = Store::open(&db(&dir)).await.unwrap();
    assert_eq!(other.load(&s.sn).await.unwrap(), None);

    // a second save replaces the queued state
    s.seen += 10;
    store.save(&s).await.unwrap();
    assert_eq!(store.queued_states(), 1);
    assert_eq!(store.flush().await.unwrap(), 1);
    assert_eq!(store.queued_states(), 0);
    assert_eq!(other.load(&s.sn).await.unwrap().as_ref(), Some(&s));

    // list, delete and expire see queued states
    let t = DeviceState::new("00-90-33-00-00-02", 50);
    store.save(&t).await.unwrap();
    assert_eq!(store.list().await.unwrap().len(), 2);
    store
        .save(&DeviceState::new("00-90-33-00-00-03", 1))
        .await
        .unwrap();
    assert_eq!(
        store.expire(40).await.unwrap(),
        1,
        "queued old device expired"
    );
    assert_eq!(store.load("00-90-33-00-00-03").await.unwrap(), None);
    store.save(&t).await.unwrap();
    assert!(store.delete(&t.sn).await.unwrap());
    assert_eq!(store.load(&t.sn).await.unwrap(), None);
    assert_eq!(other.load(&t.sn).await.unwrap(), None);

    // close writes what is queued
    s.seen += 10;
    store.save(&s).await.unwrap();
    store.close().await;
    assert_eq!(other.load(&s.sn).await.unwrap().unwrap().seen, s.seen);
}

#[tokio::test]
async fn write_behind_flushes_by_itself_within_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        write_behind: Some(Duration::from_millis(50)),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&db(&dir), &opts).await.unwrap();
    let other = Store::open(&db(&dir)).await.unwrap();
    let s = full_state("00-90-33-30-00-af");
    store.save(&s).await.unwrap();
    let mut seen = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = other.load(&s.sn).await.unwrap();
        if seen.is_some() {
            break;
        }
    }
    assert_eq!(seen.as_ref(), Some(&s));
    assert_eq!(store.queued_states(), 0);
    // The background batch keeps the written state as a clean copy, and later windows
    // (which compare the change counter) do not take it for someone else's write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.clean_states(), 1);
}

/// A server's store (write-behind, batches every `window`) and a CLI's (none) on one file.
async fn server_and_cli(dir: &tempfile::TempDir, window: Duration) -> (Store, Store) {
    let opts = StoreOptions {
        write_behind: Some(window),
        ..StoreOptions::default()
    };
    let server = Store::open_with(&db(dir), &opts).await.unwrap();
    let cli = Store::open(&db(dir)).await.unwrap();
    (server, cli)
}

/// A plain connection to the SQLite file, beside the stores.
async fn raw_sqlite(dir: &tempfile::TempDir) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", db(dir).display());
    SqliteConnectOptions::from_str(&url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Written states stay in memory as clean copies; a device written by another process (a CLI
/// next to the server) is read from the file again by the very next load (the change
/// signal), and a second writer with write-behind of its own is noticed within a window (the
/// change counter).
#[tokio::test]
async fn clean_copies_are_dropped_when_another_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        write_behind: Some(Duration::from_millis(30)),
        ..StoreOptions::default()
    };
    let server = Store::open_with(&db(&dir), &opts).await.unwrap();
    let cli = Store::open(&db(&dir)).await.unwrap();
    let mut s = full_state("00-90-33-30-00-af");
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(server.queued_states(), 0);
    assert_eq!(server.clean_states(), 1, "the written state is kept");
    assert_eq!(server.load(&s.sn).await.unwrap().as_ref(), Some(&s));

    // Another process changes the device behind the server's back: seen at once.
    s.seen += 100;
    s.phase = Some("other".into());
    cli.save(&s).await.unwrap();
    assert_eq!(server.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(server.clean_states(), 0);

    // A device the other process deletes disappears for the server at once too.
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(server.clean_states(), 1);
    assert!(cli.delete(&s.sn).await.unwrap());
    assert_eq!(server.load(&s.sn).await.unwrap(), None);

    // The server's own direct changes keep its copies exact.
    let t = DeviceState::new("00-90-33-00-00-07", 50);
    server.save(&t).await.unwrap();
    server.flush().await.unwrap();
    assert!(server.touch(&t.sn, 60).await.unwrap());
    assert_eq!(server.load(&t.sn).await.unwrap().unwrap().seen, 60);
    assert!(server.delete(&t.sn).await.unwrap());
    assert_eq!(server.load(&t.sn).await.unwrap(), None);

    // A second process with write-behind (no signal): noticed by the counter within a window.
    let mut u = DeviceState::new("00-90-33-00-00-08", 70);
    server.save(&u).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(server.clean_states(), 1);
    let other_server = Store::open_with(&db(&dir), &opts).await.unwrap();
    u.seen = 80;
    other_server.save(&u).await.unwrap();
    other_server.flush().await.unwrap();
    let mut seen = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = server.load(&u.sn).await.unwrap().unwrap().seen;
        if seen == 80 {
            break;
        }
    }
    assert_eq!(seen, 80, "the other writer's state is seen");
}

/// A server's store learns which serials the database holds, so the load of a device never
/// seen (first contact) is answered from memory; a device another process adds is seen by
/// the very next load all the same.
#[tokio::test]
async fn never_seen_devices_are_answered_from_memory_and_others_additions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_millis(20)).await;
    let a = full_state("00-90-33-30-00-a1");
    cli.save(&a).await.unwrap();
    let mut known = false;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        known = server.serials_known();
        if known {
            break;
        }
    }
    assert!(known, "the serials are read within a few windows");
    assert_eq!(server.load(&a.sn).await.unwrap().as_ref(), Some(&a));
    assert_eq!(server.load("00-90-33-30-00-a2").await.unwrap(), None);
    // The server's own saves are known, through the queue and after their batch.
    let b = DeviceState::new("00-90-33-30-00-b1", 5);
    server.save(&b).await.unwrap();
    server.flush().await.unwrap();
    server.drop_clean_states();
    assert!(
        server.serials_known(),
        "giving memory back distrusts nothing"
    );
    assert_eq!(server.load(&b.sn).await.unwrap().as_ref(), Some(&b));

    // A row that appears without any autoprov process writing it is not looked for: proof
    // that an unknown serial costs no statement.
    let mut raw = raw_sqlite(&dir).await;
    sqlx::query("INSERT INTO devices (sn, seen) VALUES ('00-90-33-30-00-c1', 7)")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();
    assert_eq!(server.load("00-90-33-30-00-c1").await.unwrap(), None);

    // Another autoprov process adds a device: seen at once, and the set is read again.
    let d = full_state("00-90-33-30-00-d1");
    cli.save(&d).await.unwrap();
    assert_eq!(server.load(&d.sn).await.unwrap().as_ref(), Some(&d));
    assert!(!server.serials_known());
    let c = server.load("00-90-33-30-00-c1").await.unwrap();
    assert_eq!(c.map(|c| c.seen), Some(7));
}

/// A device the server believes new, whose rows were nevertheless written behind its back
/// (in a way it cannot notice), is still written: its child rows replace the ones with the
/// same keys, where inserting them without the delete a new device skips would have failed
/// the batch over a duplicate key.
#[tokio::test]
async fn a_new_device_with_rows_written_behind_the_back_is_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_millis(20)).await;
    cli.save(&full_state("00-90-33-30-00-a1")).await.unwrap();
    let mut known = false;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        known = server.serials_known();
        if known {
            break;
        }
    }
    assert!(known, "the serials are read within a few windows");
    let s = full_state("00-90-33-30-00-e1");
    let mut raw = raw_sqlite(&dir).await;
    sqlx::query("INSERT INTO devices (sn, seen) VALUES (?1, 1)")
        .bind(&s.sn)
        .execute(&mut raw)
        .await
        .unwrap();
    for (table, key) in [
        ("device_scripts (sn, filename)", &s.scripts[0].filename),
        ("device_vars (sn, name)", &s.device.vars[0].0),
        ("device_queries (sn, id)", &s.queries[0].id),
    ] {
        sqlx::query(&format!("INSERT INTO {table} VALUES (?1, ?2)"))
            .bind(&s.sn)
            .bind(key)
            .execute(&mut raw)
            .await
            .unwrap();
    }
    raw.close().await.unwrap();
    assert_eq!(server.load(&s.sn).await.unwrap(), None, "not noticed");
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
}

/// A device first written as new (child rows inserted without a delete) and then with fewer
/// child rows keeps only those: once written it is not new any more.
#[tokio::test]
async fn a_new_device_written_again_with_fewer_children_keeps_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_millis(20)).await;
    cli.save(&full_state("00-90-33-30-00-a1")).await.unwrap();
    let mut known = false;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        known = server.serials_known();
        if known {
            break;
        }
    }
    assert!(known, "the serials are read within a few windows");
    let mut s = full_state("00-90-33-30-00-f1");
    assert!(s.scripts.len() > 1 && s.device.vars.len() > 1 && s.queries.len() > 1);
    for _ in 0..3 {
        server.save(&s).await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
        s.scripts.pop();
        s.device.vars.pop();
        s.queries.pop();
        s.seen += 1;
    }
}

/// The clean copies are bounded by `state_cache_bytes`.
#[tokio::test]
async fn clean_copies_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        write_behind: Some(Duration::from_secs(3600)),
        state_cache_bytes: 100_000,
        ..StoreOptions::default()
    };
    let store = Store::open_with(&db(&dir), &opts).await.unwrap();
    for i in 0..1000 {
        store
            .save(&DeviceState::new(&format!("dev-{i:04}"), 1))
            .await
            .unwrap();
    }
    assert_eq!(store.flush().await.unwrap(), 1000);
    assert!(store.clean_state_bytes() <= 100_000);
    assert!(store.clean_state_bytes() >= 80_000);
    assert!(store.clean_states() < 1000 && store.clean_states() > 10);
    for i in 0..1000 {
        let sn = format!("dev-{i:04}");
        assert_eq!(store.load(&sn).await.unwrap().unwrap().sn, sn);
    }
}

/// Two handles on one database stand for two replicas: the device lock serialises their
/// load-modify-save cycles, so no increment is lost. On SQLite the lock is a no-op and the
/// test only runs against PostgreSQL.
#[tokio::test]
async fn device_lock_serialises_replicas_on_postgres() {
    let Some((a, b)) = autoprov_store::testing::postgres_replicas().await else {
        return;
    };
    assert_eq!(a.backend(), autoprov_store::Backend::Postgres);
    a.save(&DeviceState::new("dev", 0)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let _lock = store.lock_device("dev").await.unwrap();
            let mut s = store.load("dev").await.unwrap().unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
            s.seen += 1;
            store.save(&s).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.load("dev").await.unwrap().unwrap().seen, 40);
    assert!(a.path().starts_with("postgres://"));
}

/// A batch bigger than one statement's bind limit (many devices, many children each) is
/// written completely and reads back exactly.
#[tokio::test]
async fn large_batches_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    let states: Vec<DeviceState> = (0..1500)
        .map(|i| {
            let mut s = full_state(&format!("00-90-33-{:02x}-{:02x}-00", i / 256, i % 256));
            for m in 0..12 {
                s.msgs.push(Message {
                    time: i64::from(m),
                    msg: format!("line {m} of {i}").into(),
                });
            }
            s
        })
        .collect();
    let refs: Vec<&DeviceState> = states.iter().collect();
    store.save_all(&refs).await.unwrap();
    let back = store.list().await.unwrap();
    assert_eq!(back.len(), states.len());
    for (a, b) in back.iter().zip(&states) {
        assert_eq!(a, b);
    }
}

/// Migration 0006 moves an existing message log into the `msgs` column, in log order.
#[tokio::test]
async fn message_rows_migrate_into_the_log_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = SqliteConnectOptions::new()
        .filename(db(&dir))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    for sql in [
        include_str!("../migrations/sqlite/0001_devices.sql"),
        include_str!("../migrations/sqlite/0002_vendor_fields.sql"),
        "INSERT INTO devices (sn, seen) VALUES ('a', 1), ('b', 2)",
        "INSERT INTO device_messages (sn, time, msg) VALUES ('a', 10, 'first'), \
         ('b', 11, 'other'), ('a', 12, ''), ('a', 9, 'third \"quoted\"')",
        include_str!("../migrations/sqlite/0006_messages_inline.sql"),
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    let a: String = sqlx::query_scalar("SELECT msgs FROM devices WHERE sn = 'a'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let b: String = sqlx::query_scalar("SELECT msgs FROM devices WHERE sn = 'b'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let a: serde_json::Value = serde_json::from_str(&a).unwrap();
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        a,
        serde_json::json!([[10, "first"], [12, ""], [9, "third \"quoted\""]])
    );
    assert_eq!(b, serde_json::json!([[11, "other"]]));
}

/// PostgreSQL that cannot be reached, or a database that does not exist, fail at once with
/// the reason (not after the pool's acquire timeout).
#[tokio::test]
async fn unreachable_postgres_is_a_clear_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let t0 = std::time::Instant::now();
    let err = Store::connect(&format!("postgres://u:secret@127.0.0.1:{port}/x"))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let text = err.to_string();
    assert!(matches!(err, StoreError::CannotOpen { .. }), "{err:?}");
    assert!(text.contains("is the PostgreSQL server running"), "{text}");
    assert!(!text.contains("secret"), "password leaked: {text}");
    if let Some(server) = autoprov_store::testing::test_postgres() {
        let url = autoprov_store::testing::with_database(&server, "no_such_db_here");
        let err = Store::connect(&url).await.unwrap_err();
        assert!(matches!(err, StoreError::CannotOpen { .. }), "{err:?}");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}

/// How many child rows (vars, scripts, queries) were inserted so far, counted by triggers
/// that [`count_child_inserts`] installs.
async fn child_inserts(dir: &tempfile::TempDir) -> i64 {
    let mut c = raw_sqlite(dir).await;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM test_child_inserts")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    n
}

async fn count_child_inserts(dir: &tempfile::TempDir) {
    let mut c = raw_sqlite(dir).await;
    sqlx::query("CREATE TABLE test_child_inserts (t TEXT)")
        .execute(&mut c)
        .await
        .unwrap();
    for table in ["device_vars", "device_scripts", "device_queries"] {
        sqlx::query(&format!(
            "CREATE TRIGGER test_{table} AFTER INSERT ON {table} \
             BEGIN INSERT INTO test_child_inserts VALUES ('{table}'); END"
        ))
        .execute(&mut c)
        .await
        .unwrap();
    }
    c.close().await.unwrap();
}

/// A batch writes a device's child rows (vars, scripts, queries) only when they changed,
/// and never trusts what it wrote earlier once another process wrote devices.
#[tokio::test]
async fn write_behind_rewrites_child_rows_only_when_they_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_secs(3600)).await;
    let mut s = full_state("00-90-33-30-00-af");
    assert!(!s.scripts.is_empty() && !s.device.vars.is_empty());
    count_child_inserts(&dir).await;
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    let first = child_inserts(&dir).await;
    assert!(first > 0);

    // A steady poll: time and messages change, the child rows stay as they are.
    s.seen += 10;
    s.msgs.push(Message {
        time: s.seen,
        msg: "CHECK good".into(),
    });
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(child_inserts(&dir).await, first, "unchanged rows kept");

    // A delivered script changes: the rows are written again.
    s.scripts[0].delivered += 5;
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert!(child_inserts(&dir).await > first, "changed rows written");

    // Another process (no write-behind: it signals) replaces the children; the server then
    // saves its own version with the children it wrote before: written whole again.
    let mut theirs = s.clone();
    theirs.scripts.clear();
    theirs.device.vars.clear();
    cli.save(&theirs).await.unwrap();
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));

    // A second server (write-behind, no signal) does the same: the change counter tells.
    let opts = StoreOptions {
        write_behind: Some(Duration::from_secs(3600)),
        ..StoreOptions::default()
    };
    let other = Store::open_with(&db(&dir), &opts).await.unwrap();
    other.save(&theirs).await.unwrap();
    other.flush().await.unwrap();
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
}

/// How many times a device row was written whole (an update that set `phase`), counted by
/// a trigger: the light update of a steady poll sets `seen` and `msgs` only.
async fn whole_row_updates(dir: &tempfile::TempDir, install: bool) -> i64 {
    let mut c = raw_sqlite(dir).await;
    if install {
        for sql in [
            "CREATE TABLE test_whole_rows (sn TEXT)",
            "CREATE TRIGGER test_whole_rows AFTER UPDATE OF phase ON devices \
             BEGIN INSERT INTO test_whole_rows VALUES (new.sn); END",
        ] {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM test_whole_rows")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    n
}

/// A steady poll (only the time and the message log changed) updates those two columns;
/// any other change, a direct write by this process, or another process's write since, has
/// the row written whole. The database always ends up holding exactly the saved state.
#[tokio::test]
async fn write_behind_updates_only_time_and_log_of_a_steady_poll() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_secs(3600)).await;
    let mut s = full_state("00-90-33-30-00-af");
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(whole_row_updates(&dir, true).await, 0);
    let poll = |s: &mut DeviceState| {
        s.seen += 10;
        s.msgs.push(Message {
            time: s.seen,
            msg: "CHECK good".into(),
        });
    };

    poll(&mut s);
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(whole_row_updates(&dir, false).await, 0, "time and log only");
    poll(&mut s);
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(whole_row_updates(&dir, false).await, 0);

    // Another column changes as well: written whole.
    poll(&mut s);
    s.phase = Some("staging".into());
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(whole_row_updates(&dir, false).await, 1);

    // This process writes the row directly (bypassing its queue), then queues a state whose
    // other columns are what it wrote before the direct write: written whole again.
    let mut direct = s.clone();
    direct.device.ip = Some("10.9.9.9".into());
    server.save_all(&[&direct]).await.unwrap();
    let before = whole_row_updates(&dir, false).await;
    poll(&mut s);
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(whole_row_updates(&dir, false).await, before + 1);

    // Another process changes a column; the server's next steady poll is written whole.
    let mut theirs = s.clone();
    theirs.device.hwid = Some("IP232-changed".into());
    cli.save(&theirs).await.unwrap();
    poll(&mut s);
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));

    // And once the server wrote it whole, steady polls are light again.
    let before = whole_row_updates(&dir, false).await;
    poll(&mut s);
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(whole_row_updates(&dir, false).await, before);
}

/// Awkward values survive a batch write: extreme numbers, quotes, backslashes, non-ASCII
/// text, and NUL characters (U+FFFD in plain columns, kept inside the message log).
#[tokio::test]
async fn batch_writes_keep_awkward_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test(&dir).await;
    let mut states = Vec::new();
    for i in 0..700 {
        let mut s = full_state(&format!("dev-{i:04}"));
        s.seen = if i % 2 == 0 { i64::MAX } else { i64::MIN + i };
        s.phase = Some(format!("ph\"a\\se\0{i} ünï €"));
        s.device.backup = Some(-1);
        s.msgs = vec![Message {
            time: -3,
            msg: "quote \" back \\ nul \0 tab \t".into(),
        }];
        states.push(s);
    }
    let refs: Vec<&DeviceState> = states.iter().collect();
    store.save_all(&refs).await.unwrap();
    for s in [&states[0], &states[1], &states[699]] {
        let mut want = s.clone();
        want.phase = want.phase.map(|p| p.replace('\0', "\u{FFFD}"));
        assert_eq!(store.load(&s.sn).await.unwrap().as_ref(), Some(&want));
    }
    assert_eq!(store.list().await.unwrap().len(), 700);
}

/// `devices forget` from another process (no write-behind) while a server holds a newer
/// state of the device in its queue: the server's next batch does not write it back.
#[tokio::test]
async fn a_device_forgotten_by_another_process_is_not_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_secs(3600)).await;
    let mut s = full_state("00-90-33-30-00-af");
    let other = full_state("00-90-33-30-00-b0");
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    // polled again: queued, not yet written
    s.seen += 5;
    server.save(&s).await.unwrap();
    server.save(&other).await.unwrap();
    assert!(cli.delete(&s.sn).await.unwrap());
    // a device only queued so far is forgotten too (the CLI does not know it yet)
    let queued_only = full_state("00-90-33-30-00-b1");
    server.save(&queued_only).await.unwrap();
    assert!(!cli.delete(&queued_only.sn).await.unwrap());
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap(), None, "not written back");
    assert_eq!(cli.load(&queued_only.sn).await.unwrap(), None);
    assert_eq!(server.load(&s.sn).await.unwrap(), None);
    assert_eq!(server.queued_states(), 0);
    // the other queued device is written as usual
    assert_eq!(cli.load(&other.sn).await.unwrap().as_ref(), Some(&other));

    // The device polls again after the forget: it is a new device from then on.
    let fresh = DeviceState::new(&s.sn, 99);
    server.save(&fresh).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(&fresh));
}

/// Firmware version reports from the request path are queued with the device states: nothing
/// is written until a batch (another process sees nothing yet), every reader of firmware
/// records in this process flushes first, several reports of one device apply in order, and
/// an unchanged report refreshes `reported_at` only after `refresh_after` seconds.
#[tokio::test]
async fn firmware_reports_are_queued_and_seen_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_secs(3600)).await;
    let report = |device: &str, version: &str, time: i64| FirmwareReport {
        device: device.into(),
        vendor: "snom".into(),
        model: "D785".into(),
        groups: vec!["lab".into()],
        version: version.into(),
        at_target: version == "2.0",
        time,
        refresh_after: 300,
    };
    server
        .firmware_report(report("a", "1.0", 100))
        .await
        .unwrap();
    server
        .firmware_report(report("b", "1.0", 100))
        .await
        .unwrap();
    server
        .firmware_report(report("a", "2.0", 101))
        .await
        .unwrap();
    assert_eq!(cli.firmware_progress("a").await.unwrap(), None);
    assert!(cli.firmware_progress_all().await.unwrap().is_empty());

    let a = server.firmware_progress("a").await.unwrap().unwrap();
    assert_eq!(a.reported_version.as_deref(), Some("2.0"));
    assert_eq!(a.reported_at, Some(101));
    assert_eq!(a.done_at, Some(101));
    assert_eq!(a.groups, ["lab"]);
    assert_eq!(cli.firmware_progress_all().await.unwrap().len(), 2);

    // the same report again within refresh_after: nothing to write
    server
        .firmware_report(report("a", "2.0", 200))
        .await
        .unwrap();
    server.flush().await.unwrap();
    let a = cli.firmware_progress("a").await.unwrap().unwrap();
    assert_eq!((a.reported_at, a.done_at), (Some(101), Some(101)));
    // later: reported_at refreshed, done_at kept
    server
        .firmware_report(report("a", "2.0", 500))
        .await
        .unwrap();
    let all = server.firmware_progress_all().await.unwrap();
    let a = all.iter().find(|p| p.device == "a").unwrap();
    assert_eq!((a.reported_at, a.done_at), (Some(500), Some(101)));
    // a read-modify-write (a download) sees the queued report first
    server
        .firmware_report(report("b", "1.1", 600))
        .await
        .unwrap();
    let (b, seen) = server
        .firmware_update("b", |p| p.reported_version.clone())
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("1.1"));
    assert_eq!(b.reported_at, Some(600));
}

/// A poll that changes nothing but `seen` updates that column only, and only while the
/// database holds the rest: a state still queued is written whole; the device's children
/// are not rewritten; a device forgotten by another process meanwhile stays forgotten.
#[tokio::test]
async fn seen_only_saves_update_the_last_contact() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_secs(3600)).await;
    count_child_inserts(&dir).await;
    let a = full_state("00-90-33-40-00-01");
    server.save(&a).await.unwrap();
    server.flush().await.unwrap();
    let inserts = child_inserts(&dir).await;
    assert!(inserts > 0);

    // steady poll: the database held the loaded state
    let mut s = server.load(&a.sn).await.unwrap().unwrap();
    s.seen += 60;
    server.save_seen(s.clone()).await.unwrap();
    assert_eq!(
        server.load(&a.sn).await.unwrap().as_ref(),
        Some(&s),
        "own write seen at once"
    );
    // polled again before the batch: still only `seen`
    let mut s = server.load(&a.sn).await.unwrap().unwrap();
    s.seen += 60;
    server.save_seen(s.clone()).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&a.sn).await.unwrap().as_ref(), Some(&s));
    assert_eq!(child_inserts(&dir).await, inserts, "children untouched");

    // a full change still queued, then a seen-only save on top: written whole
    let mut changed = s.clone();
    changed.phase = Some("config".into());
    changed.add_msg("changed", changed.seen);
    server.save(&changed).await.unwrap();
    let mut again = server.load(&a.sn).await.unwrap().unwrap();
    assert_eq!(again, changed);
    again.seen += 60;
    server.save_seen(again.clone()).await.unwrap();
    let mut again = server.load(&a.sn).await.unwrap().unwrap();
    again.seen += 60;
    server.save_seen(again.clone()).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(cli.load(&a.sn).await.unwrap().as_ref(), Some(&again));

    // forgotten by the CLI while a seen-only save is queued: not brought back
    let mut last = server.load(&a.sn).await.unwrap().unwrap();
    last.seen += 60;
    server.save_seen(last).await.unwrap();
    assert!(cli.delete(&a.sn).await.unwrap());
    server.flush().await.unwrap();
    assert_eq!(cli.load(&a.sn).await.unwrap(), None);
    assert_eq!(server.load(&a.sn).await.unwrap(), None);
}

/// A message another process appends (the CLI's `notify`) while the server holds the device's
/// state in memory is not lost when the server writes that older state: it stays a note
/// until a write contains it, every load merges it in (once), and forgetting the device
/// drops it.
#[tokio::test]
async fn notes_from_another_process_survive_the_servers_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_secs(3600)).await;
    let mut a = DeviceState::new("00-90-33-50-00-01", 100);
    a.add_msg("poll", 100);
    server.save(&a).await.unwrap();
    server.flush().await.unwrap();

    // a poll in progress: the server holds the state...
    let mut polled = server.load(&a.sn).await.unwrap().unwrap();
    // ...when the CLI records a NOTIFY outcome
    assert!(cli
        .append_note(&a.sn, 150, "SIP NOTIFY check-sync: 200")
        .await
        .unwrap());
    assert!(
        !cli.append_note("00-90-33-50-99-99", 150, "x")
            .await
            .unwrap(),
        "unknown device"
    );
    let texts = |s: &DeviceState| s.msgs.iter().map(|m| m.msg.to_string()).collect::<Vec<_>>();
    // the CLI sees it at once
    let seen_by_cli = cli.load(&a.sn).await.unwrap().unwrap();
    assert_eq!(texts(&seen_by_cli), ["poll", "SIP NOTIFY check-sync: 200"]);
    // the poll ends with the older state, written over the row
    polled.seen = 200;
    polled.add_msg("poll", 200);
    server.save(&polled).await.unwrap();
    server.flush().await.unwrap();
    // the note is merged into the server's next load, at its place in time
    let mut next = server.load(&a.sn).await.unwrap().unwrap();
    assert_eq!(texts(&next), ["poll", "SIP NOTIFY check-sync: 200", "poll"]);
    assert_eq!(
        texts(&cli.load(&a.sn).await.unwrap().unwrap()),
        texts(&next)
    );
    // written with the state that contains it: not merged a second time
    next.seen = 300;
    next.add_msg("poll", 300);
    server.save(&next).await.unwrap();
    server.flush().await.unwrap();
    let after = cli.load(&a.sn).await.unwrap().unwrap();
    assert_eq!(
        texts(&after),
        ["poll", "SIP NOTIFY check-sync: 200", "poll", "poll"]
    );
    assert_eq!(
        texts(&server.load(&a.sn).await.unwrap().unwrap()),
        texts(&after)
    );
    let mut raw = raw_sqlite(&dir).await;
    assert_eq!(note_rows(&mut raw).await, 0, "done with once written");

    // a note for a forgotten device goes with it
    assert!(cli.append_note(&a.sn, 400, "late").await.unwrap());
    assert_eq!(note_rows(&mut raw).await, 1);
    assert!(cli.delete(&a.sn).await.unwrap());
    assert_eq!(note_rows(&mut raw).await, 0);
}

async fn note_rows(raw: &mut sqlx::SqliteConnection) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM device_notes")
        .fetch_one(raw)
        .await
        .unwrap();
    n
}

/// `foreign_device_writes` moves after another process's device write (at once with the change
/// signal, within a window through the change counter) and never for this process's own
/// writes; a store without write-behind notices nothing and says so.
#[tokio::test]
async fn foreign_device_writes_count_other_processes_only() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        write_behind: Some(Duration::from_millis(30)),
        ..StoreOptions::default()
    };
    let server = Store::open_with(&db(&dir), &opts).await.unwrap();
    let cli = Store::open(&db(&dir)).await.unwrap();
    assert_eq!(cli.foreign_device_writes(), None);
    // Let the flusher take its first look at the counter.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = server.foreign_device_writes().unwrap();

    // Own writes: queued saves, direct changes, several windows. An explicit flush keeps
    // the clean copies of earlier batches (it once took its own batch for another writer's).
    let mut s = full_state("00-90-33-30-00-af");
    server.save(&s).await.unwrap();
    server.flush().await.unwrap();
    server
        .save(&DeviceState::new("00-90-33-00-00-0b", 5))
        .await
        .unwrap();
    server.flush().await.unwrap();
    assert_eq!(server.clean_states(), 2);
    s.seen += 1;
    server.save(&s).await.unwrap();
    assert!(server.touch(&s.sn, s.seen + 1).await.unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    server
        .save(&DeviceState::new("00-90-33-00-00-09", 5))
        .await
        .unwrap();
    assert!(server.delete("00-90-33-00-00-09").await.unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(server.foreign_device_writes(), Some(start), "own writes");

    // The CLI's write: noticed by the very next look.
    assert!(cli.delete(&s.sn).await.unwrap());
    let after_cli = server.foreign_device_writes().unwrap();
    assert!(after_cli > start, "{after_cli} > {start}");

    // A second writer with write-behind of its own (no signal): within a few windows.
    let other_server = Store::open_with(&db(&dir), &opts).await.unwrap();
    other_server
        .save(&DeviceState::new("00-90-33-00-00-0a", 9))
        .await
        .unwrap();
    other_server.flush().await.unwrap();
    let mut now = after_cli;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        now = server.foreign_device_writes().unwrap();
        if now > after_cli {
            break;
        }
    }
    assert!(now > after_cli, "the other writer is noticed");
}

/// Many devices' steady polls and touches in one batch (cut into statements of several
/// sizes): every row gets its own time and log, awkward text included, and nothing else.
#[tokio::test]
async fn a_big_batch_of_light_updates_and_touches_writes_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir, Duration::from_secs(3600)).await;
    let mut states: Vec<DeviceState> = (0..347)
        .map(|i| full_state(&format!("dev-{i:04}")))
        .collect();
    let refs: Vec<&DeviceState> = states.iter().collect();
    server.save_all(&refs).await.unwrap();
    // Written once through the queue, so the server knows the rows it wrote.
    for s in &states {
        server.save(s).await.unwrap();
    }
    server.flush().await.unwrap();
    let before = whole_row_updates(&dir, true).await;
    for (i, s) in states.iter_mut().enumerate() {
        s.seen += 1000 + i as i64;
        s.msgs.push(Message {
            time: s.seen,
            msg: format!("poll {i}: \"quoted\" \\ back ü \t").into(),
        });
    }
    let mut touched: Vec<DeviceState> = (0..299)
        .map(|i| {
            let mut s = full_state(&format!("tch-{i:04}"));
            s.seen = 5;
            s
        })
        .collect();
    let refs: Vec<&DeviceState> = touched.iter().collect();
    server.save_all(&refs).await.unwrap();
    for s in &states {
        server.save(s).await.unwrap();
    }
    for (i, s) in touched.iter_mut().enumerate() {
        s.seen = 77_000 + i as i64;
        server.save_seen(s.clone()).await.unwrap();
    }
    server.flush().await.unwrap();
    assert_eq!(
        whole_row_updates(&dir, false).await,
        before,
        "light updates only"
    );
    for s in states.iter().chain(&touched) {
        assert_eq!(cli.load(&s.sn).await.unwrap().as_ref(), Some(s), "{}", s.sn);
    }
}
