//! The mDNS / DNS-SD announcement, seen by a real DNS-SD browser (the mdns-sd crate's browser,
//! a separate responder instance speaking multicast DNS on the host's interfaces).

use std::time::Duration;

use mdns_sd::{ServiceDaemon, ServiceEvent};

use crate::helpers::TestApp;
use crate::zt_support::start_side;

#[tokio::test]
async fn announcement_is_seen_by_a_browser() {
    let instance = format!("autoprov-e2e-{}", std::process::id());
    let app = TestApp::spawn(
        &format!(
            "[mdns]\nenabled = true\ninstance = \"{instance}\"\ndigium = true\n\
             [[mdns.extra]]\nservice_type = \"_http._tcp\"\nport = 8080\ntxt = [\"path=/\"]\n"
        ),
        |_| {},
    )
    .await;
    let side = start_side(&app).await;
    let url = format!("http://{}/", app.addr);
    let browser = ServiceDaemon::new().expect("browser starts");
    for (ty, port, key, value) in [
        ("_autoprov._tcp.local.", app.addr.port(), "url", url.clone()),
        (
            "_digiumproxy._udp.local.",
            5060,
            "sipUrl",
            "sip:proxy@127.0.0.1:5060;transport=udp".to_string(),
        ),
    ] {
        let rx = browser.browse(ty).unwrap();
        let wanted = format!("{instance}.{ty}");
        let found = tokio::task::spawn_blocking(move || {
            let end = std::time::Instant::now() + Duration::from_secs(15);
            while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(ServiceEvent::ServiceResolved(info)) if info.fullname == wanted => {
                        return Some(info)
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        })
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{ty} of {instance} not seen within 15 s"));
        assert_eq!(found.port, port, "{ty}");
        assert_eq!(
            found.txt_properties.get_property_val_str(key),
            Some(value.as_str()),
            "{ty}"
        );
        let _ = browser.stop_browse(ty);
    }
    let _ = browser.shutdown();
    side.stop().await;
}
