//! The failover scenario: scenario 1's hub as several processes on
//! PostgreSQL, the clients on the standbys, and the serving process killed
//! (SIGKILL) a third of the way through. Each client retries a send under
//! the same transaction id until some process acknowledges it, as a real
//! client does. The row gives how long no send was acknowledged, and
//! whether every acknowledged event is in the room exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::http::{enc, Conn};
use super::scenarios::{figures, usages, users_in_rooms, Progress, Workdir};
use super::servers::{reset_peak, Lmx, Measured};
use super::stats::{share_of, Latencies, Row};
use crate::config::Mode;

/// How long one attempt may take before the client gives up on it and
/// tries again.
const ATTEMPT: Duration = Duration::from_secs(30);

/// The longest time no send was acknowledged, from `started` on: the
/// outage (answers already on their way when the process died may come
/// just after the kill, so the time from the kill to the next answer says
/// little).
pub fn outage(started: Instant, acknowledged_at: &[Instant]) -> Duration {
    let mut at = acknowledged_at.to_vec();
    at.sort();
    let mut last = started;
    let mut longest = Duration::ZERO;
    for t in at {
        longest = longest.max(t.saturating_duration_since(last));
        last = last.max(t);
    }
    longest
}

/// Acknowledged sends (transaction id, event id) whose event is not in the
/// room, and those in it more than once: a retry applied again would be
/// another event with the same body (the body is the transaction id).
/// `in_room` holds (event id, body) pairs.
pub fn missing_and_repeated(acknowledged: &[(String, String)], in_room: &[(String, String)]) -> (usize, usize) {
    let ids: std::collections::HashSet<&str> = in_room.iter().map(|(id, _)| id.as_str()).collect();
    let mut bodies: HashMap<&str, usize> = HashMap::new();
    for (_, body) in in_room {
        *bodies.entry(body).or_default() += 1;
    }
    let missing = acknowledged.iter().filter(|(_, id)| !ids.contains(id.as_str())).count();
    let repeated = acknowledged.iter().filter(|(txn, _)| bodies.get(txn.as_str()).is_some_and(|n| *n > 1)).count();
    (missing, repeated)
}

/// Sends until some process acknowledges this transaction; the event id.
async fn send_until_acknowledged(c: &mut Conn, room: &str, txn: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), enc(txn));
    let body = json!({"msgtype": "m.text", "body": txn});
    loop {
        if let Ok(Ok((200, v))) = tokio::time::timeout(ATTEMPT, c.call("PUT", &path, Some(&body))).await {
            if let Some(id) = v["event_id"].as_str() {
                return id.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message event of `room` (id, body), oldest first.
async fn room_messages(c: &mut Conn, room: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut ids = Vec::new();
    let mut from = String::new();
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000", enc(room));
        if !from.is_empty() {
            path.push_str(&format!("&from={}", enc(&from)));
        }
        let page = c.ok("GET", &path, None).await?;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        ids.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| Some((e["event_id"].as_str()?.to_owned(), e["content"]["body"].as_str()?.to_owned()))),
        );
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() && end != from => from = end.to_owned(),
            _ => return Ok(ids),
        }
    }
}

pub async fn failover(
    w: &Workdir,
    clients: usize,
    events: u64,
    processes: u16,
    lease_secs: Option<u64>,
) -> anyhow::Result<Row> {
    anyhow::ensure!(processes >= 2, "the failover scenario needs --processes 2 or more");
    let net = w.net("failover", &["hub"])?;
    let mut config = net.config("hub", Mode::Hub)?;
    anyhow::ensure!(config.storage.postgres.url.is_some(), "the failover scenario needs --postgres");
    if let Some(secs) = lease_secs {
        config.storage.postgres.lease_secs = secs;
    }
    let term = config.storage.postgres.lease_secs;
    let mut hub = Lmx::start(config, "hub").await?;
    let mut standbys = Vec::new();
    for n in 2..=processes {
        standbys.push(hub.forwarding_replica(n).await?);
    }
    // The clients on the standbys only: the serving process is the one
    // that dies.
    let addresses: Vec<_> = standbys.iter().map(|s| s.client).collect();
    let next = AtomicU64::new(0);
    let spread = || Conn::new(addresses[next.fetch_add(1, Ordering::Relaxed) as usize % addresses.len()]);
    let (users, rooms) = users_in_rooms(spread, clients, 1, "u").await?;
    let room = rooms[0].clone();
    let mut reader = users[0].clone_session();
    let label = format!("failover, {clients} client(s), {processes} processes, lease {term} s");
    let procs: Vec<&dyn Measured> = standbys.iter().map(|s| s as &dyn Measured).collect();
    for p in &procs {
        reset_peak(p.pid());
    }
    let before = usages(&procs);
    let progress = Progress::start(label.clone(), events);
    let counter = progress.counter();
    let acknowledged = Arc::new(Mutex::new(Vec::<(Instant, (String, String))>::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let n = users.len() as u64;
    for (i, mut c) in users.into_iter().enumerate() {
        let share = share_of(events, n, i);
        let (room, counter, acknowledged) = (room.clone(), counter.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            for k in 0..share {
                let t = Instant::now();
                let txn = format!("f-{i}-{k}");
                let id = send_until_acknowledged(&mut c, &room, &txn).await;
                lat.push(t.elapsed());
                acknowledged.lock().expect("poisoned").push((Instant::now(), (txn, id)));
                counter.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    while counter.load(Ordering::Relaxed) < events / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    hub.kill();
    let mut lat = Latencies::default();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = started.elapsed();
    drop(progress);
    let mut row = Row::new(label, events, elapsed, &lat);
    row.processes = figures(&procs, &before, events);
    let acknowledged = acknowledged.lock().expect("poisoned").clone();
    let at: Vec<Instant> = acknowledged.iter().map(|(t, _)| *t).collect();
    let sends: Vec<(String, String)> = acknowledged.into_iter().map(|(_, sent)| sent).collect();
    let gap = outage(started, &at);
    let kill = killed_at.duration_since(started).as_secs_f64();
    row.notes.push(format!("killed at {kill:.1} s; at most {:.1} s without an acknowledgement", gap.as_secs_f64()));
    let (missing, repeated) = missing_and_repeated(&sends, &room_messages(&mut reader, &room).await?);
    row.notes.push(format!("acknowledged: {} missing, {} repeated", missing, repeated));
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outage_is_the_longest_time_without_an_acknowledgement() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(outage(t0, &[at(10), at(90), at(110), at(3_100), at(2_600)]), Duration::from_millis(2_490));
        assert_eq!(outage(t0, &[at(10)]), Duration::from_millis(10));
    }

    #[test]
    fn each_acknowledged_send_is_in_the_room_once() {
        let pairs = |s: &[(&str, &str)]| s.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let sent = pairs(&[("t1", "$a"), ("t2", "$b"), ("t3", "$c")]);
        // t2's event is missing; t3 was applied twice (a second event, same body).
        let room = pairs(&[("$a", "t1"), ("$c", "t3"), ("$c2", "t3"), ("$x", "other")]);
        assert_eq!(missing_and_repeated(&sent, &room), (1, 1));
        assert_eq!(missing_and_repeated(&sent[..1], &room[..1]), (0, 0));
    }
}
