//! Scenario 1 with the hub as the serving process and members
//! (`--members`): rooms are spread over the processes (room `r` is created
//! by client `r`, on the process that client uses), so with as many rooms
//! as clients every send is written by the process it reached, and with
//! fewer rooms some are relayed to the room's owner.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::http::{enc, Conn};
use super::scenarios::{create_room, figures, registered, send_load, usages, Progress, Workdir};
use super::servers::{reset_peak, Measured};
use super::stats::Row;
use crate::config::Mode;

pub async fn local(w: &Workdir, clients: usize, rooms: usize, events: u64, processes: u16) -> anyhow::Result<Row> {
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
    for p in &procs {
        reset_peak(p.pid());
    }
    let before = usages(&procs);
    let progress = Progress::start(label.clone(), events);
    let (lat, elapsed) = send_load(users, &ids, events, "m", progress.counter()).await?;
    drop(progress);
    let mut row = Row::new(label, events, elapsed, &lat);
    row.processes = figures(&procs, &before, events);
    Ok(row)
}
