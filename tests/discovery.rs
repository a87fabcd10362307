//! Server discovery with local servers (digest 8.2): a server name without
//! a port is looked up through `/.well-known/matrix/server`, served here by
//! another lmx server; `federation.resolve` stands in for DNS.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_a_server_found_through_well_known() {
    let mut net = Net::new();
    let alpha_addr = net.reserve("alpha-fed.test");
    let well_known_addr = net.reserve("wk.test");
    net.reserve("beta.test");
    // `alpha.test` on port 443 is the well-known server; its answer
    // delegates to `alpha-fed.test:8448`, which resolves to alpha.
    net.resolve.insert("alpha.test:443".into(), well_known_addr);

    let mut alpha = net.config("alpha-fed.test");
    alpha.server_name = "alpha.test".into();
    alpha.federation.listen = alpha_addr;
    let mut wk = net.config("wk.test");
    let (cert, key) = net.ca.issue(&["alpha.test"]);
    wk.federation.tls_cert = Some(cert);
    wk.federation.tls_key = Some(key);
    wk.federation.well_known_server = Some("alpha-fed.test:8448".into());
    let beta = net.config("beta.test");

    let alpha = Server::start(alpha).await;
    let _wk = Server::start(wk).await;
    let beta = Server::start(beta).await;

    let alice = alpha.client().register("alice").await;
    let bob = beta.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert!(room.ends_with(":alpha.test"));
    let joined = bob.join(&room, "alpha.test").await;
    assert_eq!(joined.status, 200, "{}", joined.body);
    alice.send_ok(&room, "1", "found you").await;
    let events = bob.sync_until(&room, |ev| bodies(ev).contains(&"found you".to_string())).await;
    assert!(bodies(&events).contains(&"found you".to_string()));
    assert_eq!(beta.list(&room).last(), alpha.list(&room).last());
}
