//! Micro-benchmarks of the hub's per-event work (criterion):
//! `cargo bench --bench micro`. The figures are in BENCHMARKS.md.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use lmx::core::crypto::SigningKey;
use lmx::core::event::{event_id, sign_lpdu, verify_event_signature, Lpdu, RoomVersion};
use lmx::core::ids::{KeyId, RoomId, ServerName, UserId};
use lmx::core::json::{object_to_canonical, Canonical, Object};
use lmx::core::rooms::authorize;
use lmx::room::build::{hub_event_from_draft, hub_event_from_lpdu};
use lmx::room::{Draft, RoomView};
use lmx::store::records::EventRecord;
use lmx::store::{Batch, KvStore, Op, SledKv, Store};
use serde_json::json;

const HUB: &str = "hub.bench:8448";

fn key(server: &str, seed: u8) -> SigningKey {
    SigningKey::from_seed(ServerName::parse(server).unwrap(), KeyId::parse("ed25519:b").unwrap(), &[seed; 32]).unwrap()
}

fn draft(sender: &str, ty: &str, state_key: Option<&str>, content: serde_json::Value) -> Draft {
    Draft {
        sender: UserId::parse(sender).unwrap(),
        event_type: ty.into(),
        state_key: state_key.map(str::to_owned),
        content: content.as_object().unwrap().clone(),
        txn: None,
    }
}

/// A public LM room on the hub with ten members, five of them on a
/// participant server.
fn room(hub: &SigningKey) -> RoomView {
    let version = RoomVersion::lm();
    let mut view =
        RoomView::empty(RoomId::parse(&format!("!bench:{HUB}")).unwrap(), version, ServerName::parse(HUB).unwrap());
    let alice = format!("@alice:{HUB}");
    let mut steps = vec![
        draft(&alice, "m.room.create", Some(""), json!({"room_version": version.id})),
        draft(&alice, "m.room.member", Some(&alice), json!({"membership": "join"})),
        draft(&alice, "m.room.power_levels", Some(""), json!({"users": {alice.clone(): 100}})),
        draft(&alice, "m.room.join_rules", Some(""), json!({"join_rule": "public"})),
    ];
    for i in 0..10 {
        let server = if i < 5 { HUB.to_owned() } else { "p1.bench:8448".to_owned() };
        let u = format!("@u{i}:{server}");
        steps.push(draft(&u, "m.room.member", Some(&u), json!({"membership": "join"})));
    }
    for (n, d) in steps.iter().enumerate() {
        let pdu = Arc::new(hub_event_from_draft(&view, hub, d, 1_700_000_000_000 + n as i64).unwrap());
        if pdu.is_state() {
            Arc::make_mut(&mut view.state).apply(pdu.clone());
        }
        view.tail = Some(pdu.event_id().clone());
        view.length += 1;
    }
    view
}

fn message_lpdu(participant: &SigningKey) -> Lpdu {
    let mut o: Object = json!({
        "room_id": format!("!bench:{HUB}"), "type": "m.room.message", "sender": "@u5:p1.bench:8448",
        "origin_server_ts": 1_700_000_001_000_i64, "hub_server": HUB,
        "content": {"msgtype": "m.text", "body": "a message of a typical length, about sixty characters"},
    })
    .as_object()
    .unwrap()
    .clone();
    sign_lpdu(RoomVersion::lm(), participant, &mut o).unwrap();
    Lpdu::from_object(RoomVersion::lm(), o).unwrap()
}

fn protocol(c: &mut Criterion) {
    let hub = key(HUB, 1);
    let participant = key("p1.bench:8448", 2);
    let view = room(&hub);
    let lpdu = message_lpdu(&participant);
    let pdu = hub_event_from_lpdu(&view, &hub, &lpdu).unwrap();
    let version = RoomVersion::lm();

    c.bench_function("canonical JSON (RFC 8785) of a message event", |b| {
        b.iter(|| object_to_canonical(pdu.json(), Canonical::Rfc8785).unwrap())
    });
    c.bench_function("canonical JSON (Matrix) of a message event", |b| {
        b.iter(|| object_to_canonical(pdu.json(), Canonical::Matrix).unwrap())
    });
    c.bench_function("event id of a message event", |b| b.iter(|| event_id(version, pdu.json()).unwrap()));
    c.bench_function("sign an LPDU", |b| {
        b.iter_batched(
            || lpdu.json().clone(),
            |mut o| {
                o.remove("signatures");
                sign_lpdu(version, &participant, &mut o).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let hub_server = hub.server().as_str().to_owned();
    let hub_key_id = hub.key_id().as_str().to_owned();
    let hub_public = hub.public_key();
    c.bench_function("verify the hub's signature on a PDU", |b| {
        b.iter(|| verify_event_signature(version, pdu.json(), &hub_server, &hub_key_id, &hub_public).unwrap())
    });
    c.bench_function("auth check of a message (10 members)", |b| b.iter(|| authorize(&pdu, &view.state).unwrap()));
    c.bench_function("LPDU to PDU at the hub (link, hash, sign, check)", |b| {
        b.iter(|| hub_event_from_lpdu(&view, &hub, &lpdu).unwrap())
    });
}

fn storage(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::new(SledKv::open(dir.path(), 64 << 20).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hub = key(HUB, 1);
    let view = room(&hub);
    let pdu = hub_event_from_lpdu(&view, &hub, &message_lpdu(&key("p1.bench:8448", 2))).unwrap();
    let json = serde_json::to_vec(pdu.json()).unwrap();
    let mut index = 0u64;
    c.bench_function("append one event and flush (sled, fsync)", |b| {
        b.iter(|| {
            index += 1;
            let mut batch = Batch::new();
            batch
                .push(Op::PutEvent(
                    pdu.event_id().clone(),
                    EventRecord { json: json.clone(), room_id: view.room_id.to_string(), index, ..Default::default() },
                ))
                .push(Op::ListEntry { room: view.room_id.clone(), index, event: pdu.event_id().clone() });
            store.write(batch).unwrap();
            rt.block_on(store.flush()).unwrap();
        })
    });
}

/// What a room writer pays per batch to publish its view, in a room of
/// 10,000 members: the view shares its state map, next to the deep copy of
/// that map every batch made before.
fn publishing(c: &mut Criterion) {
    let hub = key(HUB, 1);
    let mut view = room(&hub);
    for i in 0..10_000 {
        let u = format!("@m{i}:{HUB}");
        let d = draft(&u, "m.room.member", Some(&u), json!({"membership": "join"}));
        let pdu = Arc::new(hub_event_from_draft(&view, &hub, &d, 1_700_000_100_000 + i).unwrap());
        Arc::make_mut(&mut view.state).apply(pdu.clone());
        view.tail = Some(pdu.event_id().clone());
        view.length += 1;
    }
    c.bench_function("publish a room view (10,000 members)", |b| b.iter(|| Arc::new(view.clone())));
    c.bench_function("deep copy of that room's state map", |b| b.iter(|| (*view.state).clone()));
}

criterion_group!(benches, protocol, storage, publishing);
criterion_main!(benches);
