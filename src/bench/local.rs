//! Scenario 1: local sends on a hub. With `processes` > 1 the hub is that
//! many processes on its database: forwarding standbys, the clients spread
//! over them (`standbys`), or members (`--members`): rooms are spread over
//! the processes (room `r` is created by client `r`, on the process that
//! client uses), so with as many rooms as clients every send is written by
//! the process it reached, and with fewer rooms some are relayed to the
//! room's owner.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::http::{enc, Conn};
use super::scenarios::{create_room, figures, registered, send_load, usages, users_in_rooms, Progress, Workdir};
use super::servers::{reset_peak, Measured};
use super::stats::Row;
use crate::config::Mode;

/// Scenario 1: local sends on a hub; with `processes` > 1, the hub is
/// that many processes on its database, the clients spread over them.
pub async fn standbys(w: &Workdir, clients: usize, rooms: usize, events: u64, processes: u16) -> anyhow::Result<Row> {
    let net = w.net("local", &["hub"])?;
    let hub = net.start("hub", Mode::Hub).await?;
    let mut standbys = Vec::new();
    for n in 2..=processes {
        standbys.push(hub.forwarding_replica(n).await?);
    }
    // Standbys first, so one client goes through a forwarding process.
    let addresses: Vec<_> = standbys.iter().map(|s| s.client).chain(std::iter::once(hub.client)).collect();
    let next = AtomicU64::new(0);
    let spread = || Conn::new(addresses[next.fetch_add(1, Ordering::Relaxed) as usize % addresses.len()]);
    let (users, ids) = users_in_rooms(spread, clients, rooms, "u").await?;
    let mut label = format!("local sends, {clients} client(s), {rooms} room(s)");
    if processes > 1 {
        label.push_str(&format!(", {processes} processes"));
    }
    let procs: Vec<&dyn Measured> =
        std::iter::once(&hub as &dyn Measured).chain(standbys.iter().map(|s| s as &dyn Measured)).collect();
    measured_sends(&procs, label, users, &ids, events).await
}

/// Scenario 1's load (`send_load`) as a row, with the figures of `procs`.
async fn measured_sends(
    procs: &[&dyn Measured],
    label: String,
    users: Vec<Conn>,
    rooms: &[String],
    events: u64,
) -> anyhow::Result<Row> {
    for p in procs {
        reset_peak(p.pid());
    }
    let before = usages(procs);
    let progress = Progress::start(label.clone(), events);
    let (lat, elapsed) = send_load(users, rooms, events, "m", progress.counter()).await?;
    drop(progress);
    let mut row = Row::new(label, events, elapsed, &lat);
    row.processes = figures(procs, &before, events);
    Ok(row)
}

/// Scenario 1 with the processes beyond the first as members.
pub async fn members(w: &Workdir, clients: usize, rooms: usize, events: u64, processes: u16) -> anyhow::Result<Row> {
    let net = w.net("local", &["hub"])?;
    let hub = net.start("hub", Mode::Hub).await?;
    let mut members = Vec::new();
    for n in 2..=processes {
        members.push(hub.member_replica(n).await?);
    }
    let addresses: Vec<_> = std::iter::once(hub.client).chain(members.iter().map(|m| m.client)).collect();
    let next = AtomicU64::new(0);
    let spread = || Conn::new(addresses[next.fetch_add(1, Ordering::Relaxed) as usize % addresses.len()]);
    let mut users = Vec::new();
    for i in 0..clients.max(1) {
        users.push(registered(spread(), &format!("u{i}")).await?);
    }
    let mut ids = Vec::new();
    for r in 0..rooms {
        let n = users.len();
        ids.push(create_room(&mut users[r % n]).await?);
    }
    for (i, u) in users.iter_mut().enumerate() {
        for (r, room) in ids.iter().enumerate() {
            if r % clients.max(1) != i {
                u.ok("POST", &format!("/_matrix/client/v3/join/{}", enc(room)), Some(&json!({}))).await?;
            }
        }
    }
    let label = format!("local sends, {clients} client(s), {rooms} room(s), {processes} processes (members)");
    let procs: Vec<&dyn Measured> =
        std::iter::once(&hub as &dyn Measured).chain(members.iter().map(|m| m as &dyn Measured)).collect();
    measured_sends(&procs, label, users, &ids, events).await
}
