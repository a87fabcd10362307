//! One conformance suite for every `Store`: the in-memory store, the sled
//! store on disk and the PostgreSQL store must behave alike.

#[allow(dead_code)] // only the cluster is used here, not the hub helpers
#[path = "common/postgres.rs"]
mod postgres;

use std::sync::Arc;

use lmx::core::ids::{EventId, RoomId, ServerName, UserId};
use lmx::store::records::queue_item::Item;
use lmx::store::records::*;
use lmx::store::{
    Access, Batch, Claim, Claimed, KvStore, MemKv, Op, PgKv, Positions, SideTopic, SledKv, Store, StoreError,
    StreamEntry, TokenHash,
};

fn room() -> RoomId {
    RoomId::parse("!r:hub.test").unwrap()
}
fn ev(n: u32) -> EventId {
    EventId::parse(&format!("$event{n}")).unwrap()
}
fn server(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}
fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn write(store: &dyn Store, ops: Vec<Op>) {
    store.write(Batch { ops, ..Batch::default() }).unwrap();
}

fn rooms_and_events(store: &dyn Store) {
    let r = room();
    let mut ops = vec![Op::PutRoom(RoomRecord {
        room_id: r.to_string(),
        room_version: "v".into(),
        hub_server: "hub.test".into(),
        length: 3,
        tail: ev(2).to_string(),
        extremities: vec![ev(2).to_string()],
        max_depth: 3,
        mls_commit: ev(1).to_string(),
    })];
    for i in 0..3u32 {
        ops.push(Op::PutEvent(
            ev(i),
            EventRecord {
                json: format!("{{\"n\":{i}}}").into_bytes(),
                room_id: r.to_string(),
                index: i as u64,
                stream: 10 + i as u64,
                ..Default::default()
            },
        ));
        ops.push(Op::ListEntry { room: r.clone(), index: i as u64, event: ev(i) });
        ops.push(Op::StreamEntry(StreamEntry { pos: 10 + i as u64, room: r.clone(), event: ev(i) }));
    }
    ops.push(Op::SetState { room: r.clone(), event_type: "m.room.create".into(), state_key: "".into(), event: ev(0) });
    ops.push(Op::SetState {
        room: r.clone(),
        event_type: "m.room.member".into(),
        state_key: "@a:hub.test".into(),
        event: ev(1),
    });
    ops.push(Op::SetState {
        room: r.clone(),
        event_type: "m.room.member".into(),
        state_key: "@a:hub.test".into(),
        event: ev(2),
    });
    ops.push(Op::LpduIndex { room: r.clone(), lpdu_hash: "h1".into(), event: ev(2) });
    write(store, ops);

    assert_eq!(store.room(&r).unwrap().unwrap().length, 3);
    assert_eq!(store.rooms().unwrap().len(), 1);
    assert_eq!(store.event(&ev(1)).unwrap().unwrap().index, 1);
    assert!(store.event(&ev(9)).unwrap().is_none());
    assert_eq!(store.list(&r, 0, 3).unwrap(), vec![ev(0), ev(1), ev(2)]);
    assert_eq!(store.list(&r, 1, 2).unwrap(), vec![ev(1)]);
    assert!(store.list(&r, 2, 1).unwrap().is_empty());
    let mut state = store.state_ids(&r).unwrap();
    state.sort();
    assert_eq!(state, vec![ev(0), ev(2)], "a later state event replaces an earlier one");
    assert_eq!(store.state_event(&r, "m.room.member", "@a:hub.test").unwrap(), Some(ev(2)));
    assert_eq!(store.state_event(&r, "m.room.member", "@b:hub.test").unwrap(), None);
    assert_eq!(store.room(&r).unwrap().unwrap().extremities, vec![ev(2).to_string()]);

    // Mixed rooms: a state key can leave the state, and snapshots are kept.
    let snapshot = StateSnapshot {
        base: ev(1).to_string(),
        entries: vec![StateEntry {
            event_type: "m.room.member".into(),
            state_key: "@a:hub.test".into(),
            event_id: ev(2).to_string(),
        }],
        chain: 1,
        replaced: ev(1).to_string(),
    };
    write(
        store,
        vec![
            Op::DeleteState { room: r.clone(), event_type: "m.room.member".into(), state_key: "@a:hub.test".into() },
            Op::PutStateAfter { event: ev(2), snapshot: snapshot.clone() },
        ],
    );
    assert_eq!(store.state_ids(&r).unwrap(), vec![ev(0)]);
    assert_eq!(store.state_event(&r, "m.room.member", "@a:hub.test").unwrap(), None, "left the state");
    assert_eq!(store.state_after(&ev(2)).unwrap(), Some(snapshot));
    assert_eq!(store.state_after(&ev(1)).unwrap(), None);
    write(
        store,
        vec![Op::SetState {
            room: r.clone(),
            event_type: "m.room.member".into(),
            state_key: "@a:hub.test".into(),
            event: ev(2),
        }],
    );
    assert_eq!(store.lpdu_event(&r, "h1").unwrap(), Some(ev(2)));
    assert_eq!(store.lpdu_event(&r, "h2").unwrap(), None);
    let after: Vec<u64> = store.stream_after(10, 10).unwrap().iter().map(|e| e.pos).collect();
    assert_eq!(after, vec![11, 12]);
    assert_eq!(store.stream_after(0, 1).unwrap()[0].event, ev(0));
    let before: Vec<u64> = store.stream_before(12, 10).unwrap().iter().map(|e| e.pos).collect();
    assert_eq!(before, vec![11, 10]);
    let in_room = |after, upto, limit| -> Vec<u64> {
        store.room_stream(&r, after, upto, limit).unwrap().iter().map(|e| e.pos).collect()
    };
    assert_eq!(in_room(10, 12, 10), vec![12, 11], "newest first, after excluded, upto included");
    assert_eq!(in_room(0, u64::MAX, 2), vec![12, 11]);
    assert_eq!(in_room(12, 12, 10), Vec::<u64>::new());
    assert_eq!(store.room_stream(&r, 9, 10, 1).unwrap()[0].event, ev(0));
    // Another room with a longer id sharing a prefix stays separate.
    let other = RoomId::parse("!r:hub.test2").unwrap();
    write(
        store,
        vec![
            Op::ListEntry { room: other.clone(), index: 0, event: ev(7) },
            Op::StreamEntry(StreamEntry { pos: 13, room: other.clone(), event: ev(7) }),
        ],
    );
    assert_eq!(store.list(&r, 0, 10).unwrap().len(), 3);
    assert_eq!(store.list(&other, 0, 10).unwrap(), vec![ev(7)]);
    assert_eq!(in_room(0, u64::MAX, 10), vec![12, 11, 10]);
    assert_eq!(store.room_stream(&other, 0, u64::MAX, 10).unwrap()[0].pos, 13);
}

fn accounts(store: &dyn Store) {
    let u = user("@a:hub.test");
    write(
        store,
        vec![
            Op::PutUser(UserRecord { user_id: u.to_string(), password_hash: "h".into(), ..Default::default() }),
            Op::PutToken {
                hash: TokenHash::of("t1"),
                record: AccessToken { user_id: u.to_string(), device_id: "D".into(), ..Default::default() },
            },
            Op::PutMembership {
                user: u.clone(),
                room: room(),
                membership: Membership { membership: "join".into(), stream: 5, ..Default::default() },
            },
            Op::PutClientTxn {
                user: u.clone(),
                device: "D".into(),
                txn: "x".into(),
                record: ClientTxn { event_id: ev(1).to_string(), ..Default::default() },
            },
        ],
    );
    assert_eq!(store.user(&u).unwrap().unwrap().password_hash, "h");
    assert!(store.user(&user("@b:hub.test")).unwrap().is_none());
    assert_eq!(store.access_token(&TokenHash::of("t1")).unwrap().unwrap().device_id, "D");
    assert_eq!(store.device_token(&u, "D").unwrap(), Some(TokenHash::of("t1")));
    assert!(store.access_token(&TokenHash::of("t2")).unwrap().is_none());
    write(
        store,
        vec![
            Op::PutDevice {
                user: u.clone(),
                device: "D".into(),
                record: DeviceRecord { display_name: "phone".into(), ..Default::default() },
            },
            Op::PutAccountData { user: u.clone(), room: None, kind: "m.x".into(), content: b"{}".to_vec() },
            Op::PutAccountData {
                user: u.clone(),
                room: Some(room()),
                kind: "m.y".into(),
                content: b"{\"a\":1}".to_vec(),
            },
            Op::PutFilter { user: u.clone(), id: "f1".into(), json: b"{}".to_vec() },
            Op::PutReceipt {
                room: room(),
                kind: "m.read".into(),
                user: u.clone(),
                receipt: Receipt { event_id: ev(1).to_string(), stream: 9, ..Default::default() },
            },
            Op::PutAlias {
                alias: "#a:hub.test".into(),
                record: AliasRecord { room_id: room().to_string(), creator: u.to_string() },
            },
            Op::SideEntry {
                pos: 12,
                entry: SideEntry { kind: Some(side_entry::Kind::TypingRoom(room().to_string())) },
            },
        ],
    );
    assert_eq!(store.devices(&u).unwrap()[0].1.display_name, "phone");
    assert_eq!(store.account_data_all(&u, None).unwrap().len(), 1);
    assert_eq!(store.account_data(&u, Some(&room()), "m.y").unwrap().unwrap(), b"{\"a\":1}".to_vec());
    assert!(store.account_data(&u, None, "m.y").unwrap().is_none(), "room and global data are apart");
    assert!(store.filter(&u, "f1").unwrap().is_some());
    assert_eq!(store.receipts(&room()).unwrap()[0].2.stream, 9);
    assert_eq!(store.user_receipts(&room(), "m.read", &u).unwrap()[0].event_id, ev(1).to_string());
    assert!(store.user_receipts(&room(), "m.read.private", &u).unwrap().is_empty(), "kinds are apart");
    let in_thread = Receipt { event_id: ev(2).to_string(), thread_id: ev(1).to_string(), ..Default::default() };
    write(store, vec![Op::PutReceipt { room: room(), kind: "m.read".into(), user: u.clone(), receipt: in_thread }]);
    let mine = store.user_receipts(&room(), "m.read", &u).unwrap();
    assert_eq!(mine.len(), 2, "a thread's receipt sits beside the unthreaded one");
    assert!(store.user_receipts(&room(), "m.read", &user("@v:hub.test")).unwrap().is_empty());
    assert_eq!(store.alias("#a:hub.test").unwrap().unwrap().room_id, room().to_string());
    let typing_room = room();
    let typing = SideTopic::Typing(typing_room.as_str());
    assert_eq!(store.side_entries(typing, 11, u64::MAX, 10).unwrap().len(), 1);
    assert_eq!(store.side_entries(typing, 11, 12, 10).unwrap()[0].0, 12);
    assert!(store.side_entries(typing, 12, u64::MAX, 10).unwrap().is_empty());
    assert!(store.side_entries(typing, 0, 11, 10).unwrap().is_empty());
    assert!(store.side_entries(SideTopic::Receipts(room().as_str()), 0, u64::MAX, 10).unwrap().is_empty());
    assert!(store.side_entries(SideTopic::Typing("!r:hub.test2"), 0, u64::MAX, 10).unwrap().is_empty());
    write(store, vec![Op::DeleteDevice { user: u.clone(), device: "D".into() }, Op::DeleteAlias("#a:hub.test".into())]);
    assert!(store.devices(&u).unwrap().is_empty());
    assert!(store.alias("#a:hub.test").unwrap().is_none());
    let ms = store.memberships(&u).unwrap();
    assert_eq!((ms.len(), ms[0].0.clone(), ms[0].1.membership.as_str()), (1, room(), "join"));
    assert_eq!(store.membership(&u, &room()).unwrap().unwrap().stream, 5);
    assert_eq!(store.client_txn(&u, "D", "x").unwrap().unwrap().event_id, ev(1).to_string());
    assert!(store.client_txn(&u, "E", "x").unwrap().is_none());
    write(store, vec![Op::DeleteToken { hash: TokenHash::of("t1"), user: u.clone(), device: "D".into() }]);
    assert!(store.device_token(&u, "D").unwrap().is_none());
    assert!(store.access_token(&TokenHash::of("t1")).unwrap().is_none());
}

fn federation(store: &dyn Store) {
    let (a, b) = (server("a.test"), server("b.test"));
    let item = |n: u32| QueueItem { item: Some(Item::EventId(ev(n).to_string())) };
    write(
        store,
        vec![
            Op::Enqueue { dest: a.clone(), pos: 3, item: item(3) },
            Op::Enqueue { dest: a.clone(), pos: 7, item: QueueItem { item: Some(Item::LpduJson(b"{}".to_vec())) } },
            Op::Enqueue { dest: a.clone(), pos: 9, item: item(9) },
            Op::Enqueue { dest: b.clone(), pos: 4, item: item(4) },
        ],
    );
    let q: Vec<u64> = store.queue(&a, 0, 10).unwrap().iter().map(|(p, _)| *p).collect();
    assert_eq!(q, vec![3, 7, 9]);
    assert_eq!(store.queue(&a, 3, 1).unwrap()[0].0, 7);
    let mut with_work = store.destinations_with_work().unwrap();
    with_work.sort();
    assert_eq!(with_work, vec![a.clone(), b.clone()]);
    write(
        store,
        vec![
            Op::Dequeue { dest: a.clone(), up_to: 7 },
            Op::PutDestination {
                dest: a.clone(),
                state: DestinationState { acked: 7, inflight_txn: "t".into(), inflight_last: 9 },
            },
        ],
    );
    assert_eq!(store.queue(&a, 0, 10).unwrap().len(), 1);
    assert_eq!(store.destination(&a).unwrap().acked, 7);
    assert_eq!(store.destination(&b).unwrap(), DestinationState::default());
    write(store, vec![Op::Dequeue { dest: b.clone(), up_to: 100 }]);
    assert_eq!(store.destinations_with_work().unwrap(), vec![a.clone()]);

    write(
        store,
        vec![
            Op::PutTxnResponse {
                origin: "a.test".into(),
                endpoint: "send".into(),
                txn: "1".into(),
                response: TxnResponse { received_ts: 1, status: 200, body: b"{}".to_vec() },
            },
            Op::PutPending {
                lpdu_hash: "h".into(),
                pending: PendingLpdu { room_id: room().to_string(), ..Default::default() },
            },
            Op::PutServerKeys { server: a.clone(), keys: ServerKeys { fetched_ts: 5, ..Default::default() } },
        ],
    );
    assert_eq!(store.txn_response("a.test", "send", "1").unwrap().unwrap().status, 200);
    assert!(store.txn_response("a.test", "invite", "1").unwrap().is_none());
    assert_eq!(store.pending_lpdus().unwrap().len(), 1);
    assert!(store.pending_lpdu("h").unwrap().is_some());
    write(store, vec![Op::DeletePending("h".into())]);
    assert!(store.pending_lpdus().unwrap().is_empty());
    assert_eq!(store.server_keys(&a).unwrap().unwrap().fetched_ts, 5);
}

fn push(store: &dyn Store) {
    let (u, v) = (user("@u:hub.test"), user("@v:hub.test"));
    assert_eq!(store.push_cursor().unwrap(), None);
    let pusher = |device: &str| PusherRecord { json: b"{}".to_vec(), device_id: device.into(), created_ts: 1 };
    let item = |n: &str| PushItem { room_id: room().to_string(), event_id: n.into(), ..Default::default() };
    let key = |user: &UserId, k: &str| (user.clone(), "app".to_owned(), k.to_owned());
    let queued = |(user, app_id, pushkey): (UserId, String, String), pos, n| Op::PushQueued {
        user,
        app_id,
        pushkey,
        pos,
        item: item(n),
    };
    let (uk, vk) = (key(&u, "k1"), key(&v, "k2"));
    write(
        store,
        vec![
            Op::PutPusher { user: u.clone(), app_id: "app".into(), pushkey: "k1".into(), record: pusher("D1") },
            Op::PutPusher { user: v.clone(), app_id: "app".into(), pushkey: "k2".into(), record: pusher("D2") },
            queued(uk.clone(), 7, "$b"),
            queued(uk.clone(), 5, "$a"),
            queued(vk.clone(), 6, "$c"),
            Op::PushCursor(9),
        ],
    );
    assert_eq!(store.push_cursor().unwrap(), Some(9));
    assert_eq!(store.pushers(None).unwrap().len(), 2);
    let mine = store.pushers(Some(&u)).unwrap();
    assert_eq!(
        (mine.len(), mine[0].1.as_str(), mine[0].2.as_str(), mine[0].3.device_id.as_str()),
        (1, "app", "k1", "D1")
    );
    let q = store.push_queue(&u, "app", "k1", 10).unwrap();
    assert_eq!(
        q.iter().map(|(p, i)| (*p, i.event_id.as_str())).collect::<Vec<_>>(),
        [(5, "$a"), (7, "$b")],
        "oldest first"
    );
    write(store, vec![Op::PushDone { user: u.clone(), app_id: "app".into(), pushkey: "k1".into(), pos: 5 }]);
    assert_eq!(store.push_queue(&u, "app", "k1", 10).unwrap().len(), 1);
    // A deleted device takes its pushers and their queues.
    write(store, vec![Op::DeleteDevice { user: u.clone(), device: "D1".into() }]);
    assert!(store.pushers(Some(&u)).unwrap().is_empty());
    assert!(store.push_queue(&u, "app", "k1", 10).unwrap().is_empty());
    write(store, vec![Op::DeletePusher { user: v.clone(), app_id: "app".into(), pushkey: "k2".into() }]);
    assert!(store.pushers(None).unwrap().is_empty() && store.push_queue(&v, "app", "k2", 10).unwrap().is_empty());
}

fn positions(store: Arc<dyn Store>) {
    let p = Positions::open(store.clone()).unwrap();
    let a = p.allocate(3).unwrap();
    let first = a.first();
    drop(a);
    assert_eq!(p.watermark(), first + 2);
    drop(p);
    let reopened = Positions::open(store).unwrap();
    assert!(reopened.allocate(1).unwrap().first() > first + 2, "positions are never reused");
}

fn suite(store: Arc<dyn Store>) {
    rooms_and_events(store.as_ref());
    accounts(store.as_ref());
    federation(store.as_ref());
    push(store.as_ref());
    positions(store);
}

#[test]
fn memory_store_conforms() {
    suite(Arc::new(KvStore::new(MemKv::new())));
}

#[test]
fn sled_store_conforms_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn Store> = Arc::new(KvStore::new(SledKv::open(dir.path(), 8 << 20).unwrap()));
        suite(store.clone());
        tokio::runtime::Runtime::new().unwrap().block_on(store.flush()).unwrap();
    }
    let reopened = KvStore::new(SledKv::open(dir.path(), 8 << 20).unwrap());
    assert_eq!(reopened.list(&room(), 0, 3).unwrap(), vec![ev(0), ev(1), ev(2)]);
    assert!(reopened.user(&user("@a:hub.test")).unwrap().is_some());
    assert_eq!(reopened.destination(&server("a.test")).unwrap().acked, 7);
}

#[test]
fn postgres_store_conforms_and_persists() {
    let Some(pg) = postgres::Postgres::start() else { return };
    let url = pg.database("conformance");
    {
        let store: Arc<dyn Store> = Arc::new(KvStore::new(
            PgKv::open(&url, None, 4, Access::Serving { term: std::time::Duration::from_secs(10) }).unwrap(),
        ));
        suite(store.clone());
        tokio::runtime::Runtime::new().unwrap().block_on(store.flush()).unwrap();
        let open_second = || {
            PgKv::open(&url, None, 1, Access::Serving { term: std::time::Duration::from_secs(10) })
                .err()
                .expect("a second serving process is refused")
        };
        let StoreError::Leased(holder) = open_second() else { panic!("refused for the lease") };
        assert_eq!((holder.client_addr, holder.federation_addr), (None, None), "nothing announced yet");
        // Where the holder serves reaches the others, for forwarding.
        store.announce("10.0.0.5:8008", "10.0.0.5:8448").unwrap();
        let StoreError::Leased(holder) = open_second() else { panic!("refused for the lease") };
        assert_eq!(holder.client_addr.as_deref(), Some("10.0.0.5:8008"));
        assert_eq!(holder.federation_addr.as_deref(), Some("10.0.0.5:8448"));
    }
    // The next holder starts with no addresses until it announces its own.
    let next = PgKv::open(&url, None, 1, Access::Serving { term: std::time::Duration::from_secs(10) }).unwrap();
    let StoreError::Leased(holder) =
        PgKv::open(&url, None, 1, Access::Serving { term: std::time::Duration::from_secs(10) }).err().unwrap()
    else {
        panic!("refused for the lease")
    };
    assert_eq!((holder.client_addr, holder.federation_addr), (None, None), "the old holder's addresses are gone");
    let watching = PgKv::open(&url, None, 1, Access::ReadOnly).unwrap();
    assert!(watching.lease_holder().unwrap().is_some(), "held");
    drop(next);
    assert_eq!(watching.lease_holder().unwrap(), None, "free once released");
    let reopened = KvStore::new(PgKv::open(&url, None, 2, Access::ReadOnly).unwrap());
    assert_eq!(reopened.list(&room(), 0, 3).unwrap(), vec![ev(0), ev(1), ev(2)]);
    assert!(reopened.user(&user("@a:hub.test")).unwrap().is_some());
    assert_eq!(reopened.destination(&server("a.test")).unwrap().acked, 7);
    assert_eq!(pg.sql("conformance", "SELECT version FROM lmx_schema"), "6", "the schema is migrated once");
}

#[test]
fn postgres_store_refuses_a_newer_schema() {
    let Some(pg) = postgres::Postgres::start() else { return };
    let url = pg.database("newer");
    drop(PgKv::open(&url, None, 1, Access::ReadOnly).unwrap());
    pg.sql("newer", "UPDATE lmx_schema SET version = 99");
    let refused = PgKv::open(&url, None, 1, Access::ReadOnly).err().expect("a newer schema is refused");
    assert!(matches!(refused, StoreError::NewerSchema { found: 99, supported: 6 }), "{refused}");
    assert!(refused.is_damage(), "nothing retries a newer schema");
}

/// Two processes writing to one PostgreSQL store (the serving one and a
/// member beside it) draw positions from one stream, and neither's readers
/// ever pass a position the other still has in flight.
#[test]
fn postgres_writers_share_one_gap_free_stream() {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    let Some(pg) = postgres::Postgres::start() else { return };
    let url = pg.database("stream");
    let term = Duration::from_secs(10);
    let open = |access| -> Arc<dyn Store> { Arc::new(KvStore::new(PgKv::open(&url, None, 4, access).unwrap())) };
    let eventually = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let serving = open(Access::Serving { term });
    let a = Positions::open(serving.clone()).unwrap();
    let alone = a.allocate(2).unwrap();
    let alone_last = *alone.positions().end();
    drop(alone);
    assert_eq!(a.watermark(), alone_last, "alone, a writer's watermark follows its own releases");
    // A writer alone reserves positions ahead; one that joins is above the
    // reserve, and is heard of, so the reserve cannot hold its readers back.
    let member = open(Access::Member { term });
    let b = Positions::open(member.clone()).unwrap();
    let joined = b.allocate(1).unwrap();
    let joined_first = joined.first();
    assert!(joined_first > alone_last + 1, "the first writer had reserved positions ahead");
    drop(joined);
    eventually("the first writer gives its reserve up", &|| b.watermark() >= joined_first);
    eventually("and follows the second", &|| a.watermark() >= joined_first);

    let held = a.allocate(1).unwrap();
    let later = b.allocate(2).unwrap();
    assert!(later.first() > held.first(), "one stream: later positions are higher");
    let last = *later.positions().end();
    drop(later);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(b.watermark() < held.first(), "the member waits for the serving process's position");
    assert!(a.watermark() < held.first(), "and so does the serving process");
    drop(held);
    eventually("both move on once it settles", &|| a.watermark() >= last && b.watermark() >= last);

    // Writers on both sides at once; a sampler checks that no watermark
    // ever covers a position still in flight anywhere.
    let in_flight = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (a, b, in_flight, stop) = (a.clone(), b.clone(), in_flight.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in [&a, &b] {
                    let mark = p.watermark();
                    let lowest = in_flight.lock().unwrap().first().copied();
                    assert!(lowest.is_none_or(|l| l > mark), "watermark {mark} covers {lowest:?}, still in flight");
                    samples += 1;
                }
            }
            samples
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (p, in_flight) = (if i % 2 == 0 { a.clone() } else { b.clone() }, in_flight.clone());
            std::thread::spawn(move || {
                for n in 0..150u64 {
                    let alloc = p.allocate(1 + (n + i) % 3).unwrap();
                    in_flight.lock().unwrap().extend(alloc.positions());
                    std::thread::sleep(Duration::from_micros((n * 37 + i * 101) % 700));
                    let mut set = in_flight.lock().unwrap();
                    for pos in alloc.positions() {
                        set.remove(&pos);
                    }
                    drop(set);
                    drop(alloc);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(sampler.join().unwrap() > 100, "the sampler ran alongside");
    let high = serving.position_high_water().unwrap();
    eventually("both reach the high water", &|| a.watermark() == high && b.watermark() == high);
    assert!(Positions::open(member.clone()).is_err(), "a second Positions on one writer's stream is refused");
    drop((b, member));
    let restarted = Positions::open(open(Access::Member { term })).unwrap();
    assert!(restarted.allocate(1).unwrap().first() > high, "positions are never reused");
}

/// Each room (and each destination's delivery) is written by one process at
/// a time: its writer's batches carry the claim, and once another process
/// has taken the room over (the holder lapsed, as a paused process does, or
/// left) a batch under the old claim writes nothing, even after its process
/// renews again.
#[test]
fn postgres_rooms_are_written_by_one_process_at_a_time() {
    let Some(pg) = postgres::Postgres::start() else { return };
    let url = pg.database("owners");
    // Long enough that no renewal runs during the test: the test lapses
    // and revives writer rows itself.
    let term = std::time::Duration::from_secs(60);
    let open = |access| -> Arc<dyn Store> { Arc::new(KvStore::new(PgKv::open(&url, None, 2, access).unwrap())) };
    let (serving, member) = (open(Access::Serving { term }), open(Access::Member { term }));
    let claimed = |batch_ops: Vec<Op>, claim: &Claim| Batch { ops: batch_ops, claim: Some(claim.clone()) };
    fn elsewhere<T>(r: Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::Elsewhere(_)))
    }

    let first = member.claim(Claimed::Room(room())).unwrap();
    assert_eq!(member.claim(Claimed::Room(room())).unwrap(), first, "claiming again keeps the epoch");
    match serving.claim(Claimed::Room(room())) {
        Err(StoreError::Elsewhere(owner)) => assert_eq!(owner.federation_addr, None, "nothing announced yet"),
        other => panic!("a room another live process holds is refused: {other:?}"),
    }
    // The refusal names where the owner serves, once it said so.
    member.announce("10.0.0.2:8008", "10.0.0.2:8448").unwrap();
    match serving.claim(Claimed::Room(room())) {
        Err(StoreError::Elsewhere(owner)) => {
            assert_eq!(owner.client_addr.as_deref(), Some("10.0.0.2:8008"));
            assert_eq!(owner.federation_addr.as_deref(), Some("10.0.0.2:8448"));
        }
        other => panic!("refused with the owner's addresses: {other:?}"),
    }
    member.write(claimed(vec![Op::PushCursor(5)], &first)).unwrap();
    assert_eq!(member.push_cursor().unwrap(), Some(5));
    // Each thing is claimed on its own: delivery to a destination too.
    let remote = || Claimed::Destination(server("remote.test"));
    let delivering = serving.claim(remote()).unwrap();
    assert!(elsewhere(member.claim(remote())), "delivery another live process holds is refused");

    let holder = pg.sql("owners", "SELECT holder FROM lmx_owner WHERE what LIKE 'room %'");
    let set_expiry = |when: &str| {
        pg.sql("owners", &format!("UPDATE lmx_writer SET expires_at = now() {when} WHERE holder = '{holder}'"));
    };
    set_expiry("- interval '1 second'");
    let taken = serving.claim(Claimed::Room(room())).unwrap();
    assert!(taken.epoch > first.epoch, "taking a lapsed holder's room moves the epoch on");
    set_expiry("+ interval '1 hour'");
    assert!(elsewhere(member.write(claimed(vec![Op::PushCursor(9)], &first))), "the old claim is refused");
    assert_eq!(serving.push_cursor().unwrap(), Some(5), "and wrote nothing");
    assert!(elsewhere(member.claim(Claimed::Room(room()))), "the room stays with the process that took it");
    serving.write(claimed(vec![Op::PushCursor(7)], &taken)).unwrap();
    assert_eq!(member.push_cursor().unwrap(), Some(7));

    // A process that leaves frees what it held at once.
    drop(serving);
    let back = member.claim(Claimed::Room(room())).unwrap();
    assert!(back.epoch > taken.epoch);
    assert!(member.claim(remote()).unwrap().epoch > delivering.epoch);
    member.write(claimed(vec![Op::PushCursor(8)], &back)).unwrap();
    assert_eq!(member.push_cursor().unwrap(), Some(8));
}
