//! The scenarios: each starts its own servers in a fresh directory, drives
//! them through their real HTTP APIs, and returns rows of figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{enc, Conn};
use super::servers::{reset_peak, Lmx, Measured, Net, Synapse, Usage};
use super::stats::{share_of, Latencies, ProcessFigures, Row};
use crate::config::Mode;

/// Where a scenario keeps its servers' data.
pub struct Workdir {
    pub root: std::path::PathBuf,
    runs: AtomicU64,
    /// Where lmx servers keep their stores when not in sled.
    postgres: Option<Arc<super::pg::BenchDatabases>>,
}

impl Workdir {
    pub fn new(root: std::path::PathBuf, postgres: Option<String>) -> Workdir {
        let postgres = postgres.map(|base| Arc::new(super::pg::BenchDatabases::new(base)));
        Workdir { root, runs: AtomicU64::new(0), postgres }
    }

    /// A network of lmx servers for one run.
    pub fn net(&self, what: &str, hosts: &[&str]) -> anyhow::Result<Net> {
        Net::new(&self.next(what), hosts, self.postgres.clone())
    }

    /// A fresh directory for one run.
    pub fn next(&self, what: &str) -> std::path::PathBuf {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!("{n:02}-{what}"))
    }
}

/// A progress line on stderr while a run goes on.
pub struct Progress {
    done: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Progress {
    pub fn start(label: String, total: u64) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let d = done.clone();
        // On a terminal one line, rewritten; in a log a line every 5 s.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let every = Duration::from_millis(if terminal { 500 } else { 5_000 });
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = rx.changed() => break,
                }
                let n = d.load(Ordering::Relaxed);
                let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
                if terminal {
                    eprint!("\r{label}: {n}/{total} events, {rate:.0}/s    ");
                } else {
                    eprintln!("{label}: {n}/{total} events, {rate:.0}/s");
                }
            }
            if terminal {
                eprintln!();
            }
        });
        Progress { done, stop }
    }

    pub fn counter(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What each process used between two readings, per 1,000 events.
pub(super) fn figures(procs: &[&dyn Measured], before: &[Usage], events: u64) -> Vec<ProcessFigures> {
    procs
        .iter()
        .zip(before)
        .map(|(p, b)| {
            let now = p.usage();
            ProcessFigures {
                name: p.label().to_owned(),
                cpu_s_per_1k: (now.cpu_s - b.cpu_s) / (events.max(1) as f64 / 1000.0),
                peak_rss_mib: now.peak_rss_mib,
                end_rss_mib: now.rss_mib,
            }
        })
        .collect()
}

pub(super) fn usages(procs: &[&dyn Measured]) -> Vec<Usage> {
    procs.iter().map(|p| p.usage()).collect()
}

pub(super) async fn registered(mut c: Conn, name: &str) -> anyhow::Result<Conn> {
    c.register(name).await?;
    Ok(c)
}

pub(super) async fn create_room(c: &mut Conn) -> anyhow::Result<String> {
    let v = c.ok("POST", "/_matrix/client/v3/createRoom", Some(&json!({"preset": "public_chat"}))).await?;
    Ok(v["room_id"].as_str().unwrap_or_default().to_owned())
}

async fn join(c: &mut Conn, room: &str, via: &str) -> anyhow::Result<()> {
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(room), enc(via));
    c.ok("POST", &path, Some(&json!({}))).await.map(|_| ())
}

async fn send(c: &mut Conn, room: &str, txn: &str, body: &str) -> anyhow::Result<()> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), enc(txn));
    c.ok("PUT", &path, Some(&json!({"msgtype": "m.text", "body": body}))).await.map(|_| ())
}

/// `clients` users, each with its own connection, sending `events`
/// messages in all, round-robin over `rooms`; closed loop.
pub(super) async fn send_load(
    clients: Vec<Conn>,
    rooms: &[String],
    events: u64,
    tag: &str,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<(Latencies, Duration)> {
    let n = clients.len() as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let share = share_of(events, n, i);
        let room = rooms[i % rooms.len()].clone();
        let (tag, counter) = (tag.to_owned(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            for k in 0..share {
                let t = Instant::now();
                send(&mut c, &room, &format!("{tag}-{i}-{k}"), &format!("{tag} {i} {k}")).await?;
                lat.push(t.elapsed());
                counter.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Latencies::default();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, started.elapsed()))
}

/// Users on one server in the rooms: the first creates them, the others
/// join; `server` names the room's server for joins.
pub(super) async fn users_in_rooms(
    make: impl Fn() -> Conn,
    n: usize,
    rooms: usize,
    prefix: &str,
) -> anyhow::Result<(Vec<Conn>, Vec<String>)> {
    let mut users = Vec::new();
    for i in 0..n.max(1) {
        users.push(registered(make(), &format!("{prefix}{i}")).await?);
    }
    let mut ids = Vec::new();
    for _ in 0..rooms {
        ids.push(create_room(&mut users[0]).await?);
    }
    for u in users.iter_mut().skip(1) {
        for r in &ids {
            u.ok("POST", &format!("/_matrix/client/v3/join/{}", enc(r)), Some(&json!({}))).await?;
        }
    }
    Ok((users, ids))
}

/// Scenario 5a: the same workload on Synapse.
pub async fn synapse_local(w: &Workdir, python: &std::path::Path, clients: usize, events: u64) -> anyhow::Result<Row> {
    let s = Synapse::start(python, &w.next("synapse-local"), "synapse").await?;
    let (users, ids) = users_in_rooms(|| s.conn(), clients, 1, "u").await?;
    let label = format!("Synapse local sends, {clients} client(s), 1 room");
    let procs: [&dyn Measured; 1] = [&s];
    reset_peak(s.pid());
    let before = usages(&procs);
    let progress = Progress::start(label.clone(), events);
    let (lat, elapsed) = send_load(users, &ids, events, "m", progress.counter()).await?;
    drop(progress);
    let mut row = Row::new(label, events, elapsed, &lat);
    row.processes = figures(&procs, &before, events);
    Ok(row)
}

/// When each message was sent (by body) and, once seen, how long it took.
#[derive(Default)]
struct Arrivals {
    sent: HashMap<String, Instant>,
    seen: Latencies,
    last: Option<Instant>,
}

type SharedArrivals = Arc<Mutex<Arrivals>>;

/// A user long-polling `/sync`, timing every message of `room` it sees.
fn watch_room(mut c: Conn, room: String, arrivals: SharedArrivals, stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let filter = enc(&json!({"room": {"timeline": {"limit": 1000}}}).to_string());
        let mut since: Option<String> = None;
        while !*stop.borrow() {
            let mut path = format!("/_matrix/client/v3/sync?timeout=2000&filter={filter}");
            if let Some(s) = &since {
                path.push_str(&format!("&since={}", enc(s)));
            }
            let Ok((200, v)) = c.call("GET", &path, None).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let now = Instant::now();
            since = v["next_batch"].as_str().map(str::to_owned);
            let events = v["rooms"]["join"][&room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
            let mut a = arrivals.lock().expect("poisoned");
            for e in events {
                if let Some(t) = e["content"]["body"].as_str().and_then(|b| a.sent.remove(b)) {
                    a.seen.push(now - t);
                    a.last = Some(now);
                }
            }
        }
    });
}

/// Three servers: a hub and two followers, with a room of the hub's that a
/// sender and a reader on each follower joined.
struct Federated<S> {
    servers: Vec<S>,
    senders: Vec<(usize, Conn)>,
    readers: Vec<Conn>,
    room: String,
}

async fn lmx_federated(w: &Workdir, senders_per_follower: usize) -> anyhow::Result<Federated<Lmx>> {
    let net = w.net("federated", &["hub", "f1", "f2"])?;
    let hub = net.start("hub", Mode::Hub).await?;
    let f1 = net.start("f1", Mode::Follower).await?;
    let f2 = net.start("f2", Mode::Follower).await?;
    let mut owner = registered(hub.conn(), "owner").await?;
    let room = create_room(&mut owner).await?;
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for (side, f) in [&f1, &f2].iter().enumerate() {
        for i in 0..senders_per_follower {
            let mut c = registered(f.conn(), &format!("s{i}")).await?;
            join(&mut c, &room, &hub.name).await?;
            senders.push((side, c));
        }
        let mut r = registered(f.conn(), "reader").await?;
        join(&mut r, &room, &hub.name).await?;
        readers.push(r);
    }
    Ok(Federated { servers: vec![hub, f1, f2], senders, readers, room })
}

async fn synapse_federated(w: &Workdir, python: &std::path::Path) -> anyhow::Result<Federated<Synapse>> {
    let dir = w.next("synapse-federated");
    let s0 = Synapse::start(python, &dir.join("s0"), "synapse-hub").await?;
    let s1 = Synapse::start(python, &dir.join("s1"), "synapse-1").await?;
    let s2 = Synapse::start(python, &dir.join("s2"), "synapse-2").await?;
    let mut owner = registered(s0.conn(), "owner").await?;
    let room = create_room(&mut owner).await?;
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for (side, s) in [&s1, &s2].iter().enumerate() {
        let mut c = registered(s.conn(), "s0").await?;
        join(&mut c, &room, &s0.name).await?;
        senders.push((side, c));
        let mut r = registered(s.conn(), "reader").await?;
        join(&mut r, &room, &s0.name).await?;
        readers.push(r);
    }
    Ok(Federated { servers: vec![s0, s1, s2], senders, readers, room })
}

/// How a federated run offers its load.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// Every sender sends as fast as its answers come.
    Closed { events: u64 },
    /// Sends start at a fixed rate, whatever the answers do.
    Open { per_second: u64, seconds: u64 },
}

/// Scenario 2 (and 5b): a follower's users send into the hub's room; the
/// latency is from the `send` call to the event in the `/sync` of the
/// reader on the other follower.
async fn federated_run<S: Measured>(label: String, f: Federated<S>, offer: Offer) -> anyhow::Result<Row> {
    let arrivals: SharedArrivals = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for r in &f.readers {
        watch_room(r.clone_session(), f.room.clone(), arrivals.clone(), stop_rx.clone());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let procs: Vec<&dyn Measured> = f.servers.iter().map(|s| s as &dyn Measured).collect();
    for p in &procs {
        reset_peak(p.pid());
    }
    let before = usages(&procs);
    let total = match offer {
        Offer::Closed { events } => events,
        Offer::Open { per_second, seconds } => per_second * seconds,
    };
    let progress = Progress::start(label.clone(), total);
    let counter = progress.counter();
    let started = Instant::now();
    let mut tasks = Vec::new();
    match offer {
        Offer::Closed { events } => {
            let n = f.senders.len() as u64;
            for (i, (_, c)) in f.senders.into_iter().enumerate() {
                let share = share_of(events, n, i);
                let (room, arrivals, counter) = (f.room.clone(), arrivals.clone(), counter.clone());
                let mut c = c;
                tasks.push(tokio::spawn(async move {
                    for k in 0..share {
                        let body = format!("c {i} {k}");
                        arrivals.lock().expect("poisoned").sent.insert(body.clone(), Instant::now());
                        send(&mut c, &room, &format!("c-{i}-{k}"), &body).await?;
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                }));
            }
        }
        Offer::Open { per_second, seconds } => {
            // One connection per send in flight: a slow answer must not hold
            // back the next send (no coordinated omission).
            let sessions: Vec<Conn> = f.senders.iter().map(|(_, c)| c.clone_session()).collect();
            let interval = Duration::from_secs_f64(1.0 / per_second as f64);
            for k in 0..per_second * seconds {
                let due = started + interval * k as u32;
                tokio::time::sleep_until(due.into()).await;
                let mut c = sessions[k as usize % sessions.len()].clone_session();
                let (room, arrivals, counter) = (f.room.clone(), arrivals.clone(), counter.clone());
                tasks.push(tokio::spawn(async move {
                    let body = format!("o {k}");
                    arrivals.lock().expect("poisoned").sent.insert(body.clone(), Instant::now());
                    send(&mut c, &room, &format!("o-{k}"), &body).await?;
                    counter.fetch_add(1, Ordering::Relaxed);
                    anyhow::Ok(())
                }));
            }
        }
    }
    for t in tasks {
        t.await??;
    }
    // Every message reaches the other follower's reader.
    let deadline = Instant::now() + Duration::from_secs(120);
    while arrivals.lock().expect("poisoned").seen.len() < total as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(progress);
    let _ = stop_tx.send(true);
    let a = std::mem::take(&mut *arrivals.lock().expect("poisoned"));
    anyhow::ensure!(!a.seen.is_empty(), "{label}: no message reached the other side");
    let elapsed = a.last.map_or(started.elapsed(), |l| l - started);
    let seen = a.seen.len() as u64;
    let mut row = Row::new(label, seen, elapsed, &a.seen);
    if seen < total {
        // A sync that falls far behind answers a limited timeline; those
        // messages arrived, but their time of arrival is unknown.
        row.notes.push(format!("{} of {total} messages timed (the rest came in limited syncs)", seen));
    }
    row.processes = figures(&procs, &before, total);
    Ok(row)
}

pub async fn federated(w: &Workdir, offer: Offer) -> anyhow::Result<Row> {
    let label = match offer {
        Offer::Closed { .. } => "federated, closed loop (send → other follower's sync)".to_owned(),
        Offer::Open { per_second, .. } => {
            format!("federated, {per_second} events/s offered (send → other follower's sync)")
        }
    };
    let senders = if matches!(offer, Offer::Closed { .. }) { 4 } else { 1 };
    federated_run(label, lmx_federated(w, senders).await?, offer).await
}

pub async fn synapse_federated_latency(w: &Workdir, python: &std::path::Path, offer: Offer) -> anyhow::Result<Row> {
    let label = match offer {
        Offer::Closed { .. } => "Synapse ×3, closed loop".to_owned(),
        Offer::Open { per_second, .. } => {
            format!("Synapse ×3, {per_second} events/s offered (send → other server's sync)")
        }
    };
    federated_run(label, synapse_federated(w, python).await?, offer).await
}

/// Scenario 3: many rooms, each with a user of the hub and one of each
/// follower; the servers' memory once idle; then sends into 1, 10 and 100
/// of them.
pub async fn many_rooms(w: &Workdir, rooms: usize, active: &[usize], events: u64) -> anyhow::Result<Vec<Row>> {
    let net = w.net("rooms", &["hub", "f1", "f2"])?;
    let hub = net.start("hub", Mode::Hub).await?;
    let f1 = net.start("f1", Mode::Follower).await?;
    let f2 = net.start("f2", Mode::Follower).await?;
    let owner = registered(hub.conn(), "owner").await?;
    let j1 = registered(f1.conn(), "member").await?;
    let j2 = registered(f2.conn(), "member").await?;
    let label = format!("{rooms} rooms × 3 servers: create and join");
    let progress = Progress::start(label.clone(), rooms as u64);
    let counter = progress.counter();
    let started = Instant::now();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let workers = 8;
    let mut tasks = Vec::new();
    for wk in 0..workers {
        let (mut o, mut a, mut b) = (owner.clone_session(), j1.clone_session(), j2.clone_session());
        let (hub_name, ids, counter) = (hub.name.clone(), ids.clone(), counter.clone());
        let share = rooms / workers + usize::from(wk < rooms % workers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let r = create_room(&mut o).await?;
                join(&mut a, &r, &hub_name).await?;
                join(&mut b, &r, &hub_name).await?;
                ids.lock().expect("poisoned").push(r);
                counter.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    drop(progress);
    let setup = started.elapsed();
    // Let queues drain and the servers settle before reading memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (h, f) = (hub.usage(), f1.usage());
    let mut rows = Vec::new();
    let mut setup_row = Row::new(label, rooms as u64 * 3, setup, &Latencies::default());
    setup_row.notes.push(format!(
        "idle after setup, rooms loaded: hub {:.0} MiB RSS ({:.1} KiB per room), follower {:.0} MiB",
        h.rss_mib,
        h.rss_mib * 1024.0 / rooms as f64,
        f.rss_mib
    ));
    // Rooms rest once idle for `storage.room_idle_secs` (as shipped); the
    // memory goes back to the system at the next quiet moment after that.
    let rest = hub.config.storage.room_idle_secs.max(f1.config.storage.room_idle_secs);
    tokio::time::sleep(Duration::from_secs(rest + 5)).await;
    let (h, f) = (hub.usage(), f1.usage());
    setup_row.notes.push(format!(
        "idle after setup, rooms at rest ({rest} s idle): hub {:.0} MiB RSS ({:.1} KiB per room), follower {:.0} MiB",
        h.rss_mib,
        h.rss_mib * 1024.0 / rooms as f64,
        f.rss_mib
    ));
    rows.push(setup_row);
    let ids = ids.lock().expect("poisoned").clone();
    for &k in active {
        let k = k.min(ids.len()).max(1);
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(owner.clone_session());
        }
        let label = format!("{rooms} rooms: local sends into {k} active room(s), 10 clients");
        let procs: [&dyn Measured; 3] = [&hub, &f1, &f2];
        let before = usages(&procs);
        let progress = Progress::start(label.clone(), events);
        let (lat, elapsed) = send_load(clients, &ids[..k], events, &format!("a{k}"), progress.counter()).await?;
        drop(progress);
        let mut row = Row::new(label, events, elapsed, &lat);
        row.processes = figures(&procs, &before, events);
        rows.push(row);
    }
    Ok(rows)
}

/// Scenario 4: a follower offline while `events` accumulate in its rooms;
/// then the time from its start until its user's sync has the last one.
pub async fn catch_up(w: &Workdir, rooms: usize, events: u64) -> anyhow::Result<Row> {
    let net = w.net("catchup", &["hub", "f1"])?;
    let hub = net.start("hub", Mode::Hub).await?;
    let mut f1 = net.start("f1", Mode::Follower).await?;
    let (senders, ids) = users_in_rooms(|| hub.conn(), 10, rooms, "u").await?;
    let mut reader = registered(f1.conn(), "reader").await?;
    for r in &ids {
        join(&mut reader, r, &hub.name).await?;
    }
    // The reader's sync position before the outage.
    let filter = enc(&json!({"room": {"timeline": {"limit": 1}}}).to_string());
    let first = reader.ok("GET", &format!("/_matrix/client/v3/sync?filter={filter}"), None).await?;
    let mut since = first["next_batch"].as_str().unwrap_or_default().to_owned();
    f1.stop();
    let label = format!("catch-up: {events} events in {rooms} rooms while a follower was offline");
    let progress = Progress::start(format!("{label} (sending)"), events);
    let (_, send_time) = send_load(senders, &ids, events, "c", progress.counter()).await?;
    drop(progress);
    // The last event of each room, as the hub has it.
    let mut last: HashMap<String, String> = HashMap::new();
    let mut owner = registered(hub.conn(), "checker").await?;
    for r in &ids {
        join(&mut owner, r, &hub.name).await.ok();
        let v = owner.ok("GET", &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(r)), None).await?;
        let id = v["chunk"][0]["event_id"].as_str().unwrap_or_default().to_owned();
        last.insert(r.clone(), id);
    }
    let started = Instant::now();
    f1.spawn().await?;
    let mut waiting: Vec<String> = ids.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !waiting.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "{label}: the follower did not catch up");
        let path = format!("/_matrix/client/v3/sync?timeout=1000&filter={filter}&since={}", enc(&since));
        let Ok((200, v)) = reader.call("GET", &path, None).await else { continue };
        since = v["next_batch"].as_str().unwrap_or_default().to_owned();
        waiting.retain(|r| {
            let events = v["rooms"]["join"][r]["timeline"]["events"].as_array().cloned().unwrap_or_default();
            !events.iter().any(|e| e["event_id"].as_str() == last.get(r).map(String::as_str))
        });
    }
    let elapsed = started.elapsed();
    let mut row = Row::new(label, events, elapsed, &Latencies::default());
    row.notes.push(format!(
        "events/s is catch-up speed (follower start → its client's sync has every room's last event); sending took {:.1} s",
        send_time.as_secs_f64()
    ));
    let u = f1.usage();
    row.processes = vec![ProcessFigures {
        name: "f1".into(),
        cpu_s_per_1k: 0.0,
        peak_rss_mib: u.peak_rss_mib,
        end_rss_mib: u.rss_mib,
    }];
    Ok(row)
}

/// The memory figures: RSS of a fresh server before and after registrations
/// (idle), and of a follower after traffic and registrations (idle).
pub async fn memory(w: &Workdir, registrations: usize, events: u64) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let net = w.net("memory", &["hub", "f1"])?;
    let hub = net.start("hub", Mode::Hub).await?;
    let f1 = net.start("f1", Mode::Follower).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh = f1.usage();
    let started = Instant::now();
    // Ten at a time, as a busy sign-up page would send them.
    for batch in 0..registrations.div_ceil(10) {
        let mut tasks = Vec::new();
        for i in batch * 10..(batch * 10 + 10).min(registrations) {
            let c = f1.conn();
            tasks.push(tokio::spawn(async move { registered(c, &format!("r{i}")).await.map(|_| ()) }));
        }
        for t in tasks {
            t.await??;
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = f1.usage();
    let mut row = Row::new(
        format!("{registrations} registrations on a fresh server"),
        registrations as u64,
        took,
        &Latencies::default(),
    );
    row.notes.push(format!(
        "RSS {:.1} MiB fresh → {:.1} MiB idle after (+{:.1} MiB; peak {:.1} MiB)",
        fresh.rss_mib,
        after.rss_mib,
        after.rss_mib - fresh.rss_mib,
        after.peak_rss_mib
    ));
    rows.push(row);

    let (senders, ids) = users_in_rooms(|| hub.conn(), 10, 1, "u").await?;
    let mut owner = senders[0].clone_session();
    let mut reader = registered(f1.conn(), "reader").await?;
    join(&mut reader, &ids[0], &hub.name).await?;
    let label = format!("follower after {events} events");
    let progress = Progress::start(label.clone(), events);
    let (_, elapsed) = send_load(senders, &ids, events, "f", progress.counter()).await?;
    drop(progress);
    // Idle once the follower has the hub's last event.
    let last = |v: &Value| v["chunk"][0]["event_id"].as_str().unwrap_or_default().to_owned();
    let newest = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(&ids[0]));
    let want = last(&owner.ok("GET", &newest, None).await?);
    let deadline = Instant::now() + Duration::from_secs(120);
    while last(&reader.ok("GET", &newest, None).await?) != want {
        anyhow::ensure!(Instant::now() < deadline, "the follower did not get every event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Idle: a server gives memory back once nothing was written for a
    // couple of seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = f1.usage();
    let mut row = Row::new(label, events, elapsed, &Latencies::default());
    row.notes.push(format!(
        "follower idle RSS {:.1} MiB after {events} events and {registrations} registrations (peak {:.1} MiB)",
        idle.rss_mib, idle.peak_rss_mib
    ));
    rows.push(row);
    Ok(rows)
}

/// A user's incremental `/sync` from a token taken before other users' rooms
/// took `events` events, with one new event in the user's own room: how
/// many calls and how long until that event shows, measured `repeats`
/// times from the same token, then an idle sync's time.
pub async fn sync_behind_others(w: &Workdir, events: u64, repeats: usize) -> anyhow::Result<Row> {
    let net = w.net("sync", &["hub"])?;
    let hub = net.start("hub", Mode::Hub).await?;
    let mut reader = registered(hub.conn(), "reader").await?;
    let own = create_room(&mut reader).await?;
    let since =
        reader.ok("GET", "/_matrix/client/v3/sync", None).await?["next_batch"].as_str().unwrap_or_default().to_owned();
    let (senders, ids) = users_in_rooms(|| hub.conn(), 10, 10, "u").await?;
    let label = format!("sync behind {events} events of others' rooms");
    let progress = Progress::start(label.clone(), events);
    send_load(senders, &ids, events, "o", progress.counter()).await?;
    drop(progress);
    send(&mut reader, &own, "mine", "for the reader").await?;
    let procs: [&dyn Measured; 1] = [&hub];
    let before = usages(&procs);
    let (mut lat, mut calls, mut upto) = (Latencies::default(), 0u64, since.clone());
    let started = Instant::now();
    for _ in 0..repeats {
        let t = Instant::now();
        let mut token = since.clone();
        loop {
            let v = reader.ok("GET", &format!("/_matrix/client/v3/sync?since={token}&timeout=0"), None).await?;
            calls += 1;
            token = v["next_batch"].as_str().unwrap_or_default().to_owned();
            if v["rooms"]["join"].get(&own).is_some() {
                break;
            }
        }
        lat.push(t.elapsed());
        upto = token;
    }
    let elapsed = started.elapsed();
    let idle_started = Instant::now();
    for _ in 0..repeats {
        reader.ok("GET", &format!("/_matrix/client/v3/sync?since={upto}&timeout=0"), None).await?;
    }
    let idle = idle_started.elapsed() / repeats.max(1) as u32;
    let mut row = Row::new(label, repeats as u64, elapsed, &lat);
    row.processes = figures(&procs, &before, repeats as u64);
    row.notes.push(format!(
        "latency: from the old token until the reader's own event shows, in {:.1} calls on average; an idle \
         incremental sync {:.2} ms",
        calls as f64 / repeats.max(1) as f64,
        idle.as_secs_f64() * 1000.0
    ));
    Ok(row)
}
