//! `lmx bench`: the project's own benchmarks. Each scenario starts real
//! `lmx serve` processes of this binary (and Synapse, for the comparisons),
//! drives them through their HTTP APIs with an async load generator, and
//! prints a table: events/s, latency percentiles, CPU seconds per 1,000
//! events and peak RSS per process. BENCHMARKS.md holds the figures and the
//! commands that made them.

mod failover;
pub mod http;
mod local;
mod pg;
pub mod scenarios;
pub mod servers;
pub mod stats;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use scenarios::{Offer, Workdir};
use stats::{ratio, table, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 1: local sends on a hub (1, 10, 100 clients; 1 and 10 rooms).
    Local,
    /// 2: a follower's users send into a room hubbed elsewhere; latency to
    /// the other follower's sync (closed loop; 50 and 500 events/s).
    Federated,
    /// 3: many rooms of three servers; memory; sends into 1, 10, 100.
    Rooms,
    /// 4: a follower catching up after an outage.
    Catchup,
    /// Memory after registrations, and of a follower after traffic.
    Memory,
    /// A user's incremental sync while others' rooms are busy.
    Sync,
    /// 5: Synapse under scenario 1's and scenario 2's workloads.
    Synapse,
    /// The hub as `--processes` processes on PostgreSQL (2 by default), the
    /// serving one killed under load: the outage, and nothing acknowledged
    /// lost (needs `--postgres`).
    Failover,
    /// Everything above.
    All,
}

#[derive(Debug, Parser)]
pub struct Args {
    /// Scenarios to run (default: all).
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Small counts, to check the tool works (what CI runs).
    #[arg(long)]
    pub smoke: bool,
    /// Print the rows as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Where the servers keep their data (default: a new directory under
    /// the system's temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Python of a virtualenv with `matrix-synapse` installed
    /// (`scripts/bench` makes one). Without it the Synapse parts are
    /// skipped, and the tool says so.
    #[arg(long, env = "LMX_SYNAPSE_PYTHON")]
    pub synapse_python: Option<PathBuf>,
    /// Scenario 1 only with these numbers of clients (e.g. `--clients 10`).
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<usize>,
    /// Scenario 1 only with these numbers of rooms.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<usize>,
    /// Events per run of scenarios 1, 2 (closed loop) and 4, and others'
    /// events behind the sync scenario's token, instead of their defaults.
    #[arg(long)]
    pub events: Option<u64>,
    /// Keep every lmx server's store in PostgreSQL: a connection URL to a
    /// database on a server where the bench may create databases (one per
    /// lmx server, dropped afterwards).
    #[arg(long, env = "LMX_BENCH_POSTGRES")]
    pub postgres: Option<String>,
    /// Scenario 1's hub as this many processes on its database (needs
    /// `--postgres`): one serves, the others forward to it, and the
    /// clients are spread over all of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub processes: u16,
    /// With `--processes`: the processes beyond the first are members
    /// (`storage.postgres.member`) that write rooms of their own, the rooms
    /// created round the processes, instead of forwarding standbys.
    #[arg(long)]
    pub members: bool,
    /// The failover scenario's `storage.postgres.lease_secs` (default: lmx's).
    #[arg(long)]
    pub lease_secs: Option<u64>,
}

/// Counts of a full run, or of a smoke run.
struct Sizes {
    local_clients: &'static [usize],
    local_rooms: &'static [usize],
    local_events: u64,
    federated_events: u64,
    open_rates: &'static [u64],
    open_seconds: u64,
    rooms: usize,
    active: &'static [usize],
    active_events: u64,
    catchup_events: u64,
    registrations: usize,
    follower_events: u64,
    synapse_events: u64,
    sync_behind: u64,
}

const FULL: Sizes = Sizes {
    local_clients: &[1, 10, 100],
    local_rooms: &[1, 10],
    local_events: 20_000,
    federated_events: 10_000,
    open_rates: &[50, 500],
    open_seconds: 20,
    rooms: 10_000,
    active: &[1, 10, 100],
    active_events: 10_000,
    catchup_events: 100_000,
    registrations: 100,
    follower_events: 10_000,
    synapse_events: 2_000,
    sync_behind: 20_000,
};

const SMOKE: Sizes = Sizes {
    local_clients: &[1, 10],
    local_rooms: &[1],
    local_events: 200,
    federated_events: 100,
    open_rates: &[20],
    open_seconds: 3,
    rooms: 20,
    active: &[1, 10],
    active_events: 100,
    catchup_events: 300,
    registrations: 10,
    follower_events: 200,
    synapse_events: 20,
    sync_behind: 200,
};

/// Runs the asked scenarios; the rows of every table printed.
pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let size = if args.smoke { &SMOKE } else { &FULL };
    let wanted = |s: Scenario| {
        args.scenarios.is_empty() || args.scenarios.contains(&Scenario::All) || args.scenarios.contains(&s)
    };
    let (root, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("lmx-bench-{}", std::process::id())), true),
    };
    anyhow::ensure!(args.processes == 1 || args.postgres.is_some(), "--processes needs --postgres");
    let w = Workdir::new(root.clone(), args.postgres.clone());
    let mut all = Vec::new();
    let section = |title: &str, rows: Vec<Row>, all: &mut Vec<Row>| {
        if !args.json {
            println!("\n## {title}\n\n{}", table(&rows));
        }
        all.extend(rows);
    };
    if wanted(Scenario::Local) {
        let mut rows = Vec::new();
        let pick = |given: &[usize], default: &'static [usize]| {
            if given.is_empty() {
                default.to_vec()
            } else {
                given.to_vec()
            }
        };
        for rooms in pick(&args.rooms, size.local_rooms) {
            for clients in pick(&args.clients, size.local_clients) {
                let events = args.events.unwrap_or(size.local_events);
                let row = if args.members {
                    local::members(&w, clients, rooms, events, args.processes).await?
                } else {
                    local::standbys(&w, clients, rooms, events, args.processes).await?
                };
                rows.push(row);
            }
        }
        section("Scenario 1: local sends on a hub", rows, &mut all);
    }
    if wanted(Scenario::Federated) {
        let closed = Offer::Closed { events: args.events.unwrap_or(size.federated_events) };
        let mut rows = vec![scenarios::federated(&w, closed).await?];
        for &rate in size.open_rates {
            rows.push(scenarios::federated(&w, Offer::Open { per_second: rate, seconds: size.open_seconds }).await?);
        }
        section("Scenario 2: federated path (two followers, a hub)", rows, &mut all);
    }
    if wanted(Scenario::Rooms) {
        let rows = scenarios::many_rooms(&w, size.rooms, size.active, size.active_events).await?;
        section("Scenario 3: many rooms", rows, &mut all);
    }
    if wanted(Scenario::Catchup) {
        let rows = vec![scenarios::catch_up(&w, 10, args.events.unwrap_or(size.catchup_events)).await?];
        section("Scenario 4: catch-up", rows, &mut all);
    }
    if wanted(Scenario::Memory) {
        let rows = scenarios::memory(&w, size.registrations, size.follower_events).await?;
        section("Memory", rows, &mut all);
    }
    if wanted(Scenario::Sync) {
        let rows = vec![scenarios::sync_behind_others(&w, args.events.unwrap_or(size.sync_behind), 20).await?];
        section("Sync behind busy rooms", rows, &mut all);
    }
    if wanted(Scenario::Synapse) {
        match &args.synapse_python {
            None => eprintln!(
                "Synapse comparison skipped: no --synapse-python (or LMX_SYNAPSE_PYTHON); scripts/bench installs one"
            ),
            Some(py) => {
                let mut rows = Vec::new();
                for clients in [1, 10] {
                    rows.push(scenarios::synapse_local(&w, py, clients, size.synapse_events).await?);
                }
                let offer = Offer::Open { per_second: size.open_rates[0], seconds: size.open_seconds };
                rows.push(scenarios::synapse_federated_latency(&w, py, offer).await?);
                section("Scenario 5: Synapse, same machine, same run", rows, &mut all);
            }
        }
    }
    if wanted(Scenario::Failover) {
        match &args.postgres {
            None => eprintln!("failover scenario skipped: it needs --postgres"),
            Some(_) => {
                let clients = args.clients.first().copied().unwrap_or(10);
                let events = args.events.unwrap_or(size.local_events / 2);
                let processes = args.processes.max(2);
                let rows = vec![failover::failover(&w, clients, events, processes, args.lease_secs).await?];
                section("Failover: the serving process killed under load", rows, &mut all);
            }
        }
    }
    if !args.json {
        let ratios = comparisons(&all);
        if !ratios.is_empty() {
            println!("\n## lmx against Synapse\n\n{ratios}");
        }
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(all)
}

/// lmx's figures over Synapse's for the workloads both ran.
fn comparisons(rows: &[Row]) -> String {
    let find = |prefix: &str| rows.iter().find(|r| r.scenario.starts_with(prefix));
    let cpu = |r: &Row| r.processes.iter().map(|p| p.cpu_s_per_1k).sum::<f64>();
    let mut out = String::from("| workload | lmx | Synapse | ratio |\n|---|---:|---:|---:|\n");
    let mut any = false;
    for clients in [1, 10] {
        let lmx = find(&format!("local sends, {clients} client(s), 1 room"));
        let syn = find(&format!("Synapse local sends, {clients} client(s), 1 room"));
        if let (Some(l), Some(s)) = (lmx, syn) {
            any = true;
            out.push_str(&format!(
                "| local sends, {clients} client(s): events/s | {:.0} | {:.0} | {} |\n",
                l.events_per_s,
                s.events_per_s,
                ratio(l.events_per_s, s.events_per_s)
            ));
            out.push_str(&format!(
                "| local sends, {clients} client(s): CPU s per 1k events | {:.3} | {:.3} | {} less |\n",
                cpu(l),
                cpu(s),
                ratio(cpu(s), cpu(l))
            ));
        }
    }
    let lmx = rows.iter().find(|r| r.scenario.starts_with("federated, ") && r.scenario.contains("offered"));
    let syn = rows.iter().find(|r| r.scenario.starts_with("Synapse ×3"));
    if let (Some(l), Some(s)) = (lmx, syn) {
        any = true;
        for (what, a, b) in [("p50", l.latency.p50_ms, s.latency.p50_ms), ("p99", l.latency.p99_ms, s.latency.p99_ms)] {
            out.push_str(&format!(
                "| federated send → other server's sync, {what} ms | {a:.1} | {b:.1} | {} lower |\n",
                ratio(b, a)
            ));
        }
    }
    if any {
        out
    } else {
        String::new()
    }
}
