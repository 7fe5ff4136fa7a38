//! Times the write-behind flush of device states in their steady state (a full 200-message
//! log, two delivered scripts): each round changes every state as a poll does (one message
//! out, one in, a new `seen`) and flushes them as one batch. A measurement, not a test:
//!
//! ```sh
//! cargo run --release -p autoprov-store --example state_flush
//! ```
use autoprov_core::state::{DeliveredScript, DeviceState, Message};
use autoprov_store::{Store, StoreOptions};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        write_behind: Some(Duration::from_secs(3600)),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&dir.path().join("a.db"), &opts)
        .await
        .unwrap();
    let n = 2000;
    let mut states: Vec<DeviceState> = (0..n)
        .map(|i| {
            let mut s = DeviceState::new(&format!("00-90-33-00-{:02x}-{:02x}", i / 256, i % 256), 1);
            s.device.device_type = Some("IP232".into());
            s.phase = Some("update".into());
            s.scripts.push(DeliveredScript { filename: "scripts/update-all-default.txt".into(), delivered: 5, version: 6 });
            s.scripts.push(DeliveredScript { filename: "scripts/update-phone-default.txt".into(), delivered: 5, version: 6 });
            for t in 0..200 {
                s.msgs.push(Message { time: 1_700_000_000 + t, msg: if t % 3 == 0 { "".into() } else { "phase: update, nextphase: , environment: default, type: IP232, classes: phone+pre_opus_phone".into() } });
            }
            s
        })
        .collect();
    for round in 0..6 {
        for s in states.iter_mut() {
            s.seen += 1;
            s.msgs.remove(0);
            s.msgs.push(Message {
                time: s.seen,
                msg: "certificates: none".into(),
            });
            store.save(s).await.unwrap();
        }
        let t = Instant::now();
        store.flush().await.unwrap();
        let cpu = Instant::now() - t;
        println!(
            "round {round}: {n} states flushed in {:?} ({:.1} us/state)",
            cpu,
            cpu.as_secs_f64() * 1e6 / n as f64
        );
    }
}
