//! The status page: plain server-rendered HTML (no script), made from
//! facts gathered by the admin API, so what it shows and what the API
//! answers cannot disagree.

use std::fmt::Write as _;

use super::recent::Logged;

/// What the page shows.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub server_name: String,
    pub version: String,
    pub mode: String,
    pub uptime_secs: u64,
    pub store_bytes: u64,
    pub rooms_total: usize,
    pub rooms: Vec<RoomLine>,
    pub destinations: Vec<DestinationLine>,
    pub pending_lpdus: usize,
    pub errors: Vec<Logged>,
}

/// A room this server hubs.
#[derive(Debug, Clone, Default)]
pub struct RoomLine {
    pub room_id: String,
    pub name: String,
    pub version: String,
    pub joined_members: usize,
    pub servers: usize,
    pub events: u64,
}

/// A server this one delivers to.
#[derive(Debug, Clone, Default)]
pub struct DestinationLine {
    pub destination: String,
    /// `ok`, `backing off` or `idle`.
    pub state: String,
    pub failures: u32,
    pub last_error: String,
    pub queue_depth: usize,
    pub lag_positions: u64,
    /// Since the queue last drained.
    pub lag_secs: u64,
    pub retry_in_secs: u64,
}

/// Text made safe for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
th{background:#f3f3f3}.bad{color:#b00020;font-weight:bold}.ok{color:#0a7d32}code{font-size:90%}";

/// The page.
pub fn render(f: &Facts) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lmx status: {name}</title>\
         <style>{STYLE}</style></head><body><h1>lmx status: <span id=\"server-name\">{name}</span></h1>\
         <p>Version {version}, {mode} mode, up <span id=\"uptime\">{up}</span> s. \
         Store: <span id=\"store-size\" data-bytes=\"{bytes}\">{size}</span>. \
         Rooms known: <span id=\"rooms-total\">{rooms}</span>. \
         LPDUs waiting for their hub: <span id=\"pending-lpdus\">{pending}</span>.</p>",
        name = escape(&f.server_name),
        version = escape(&f.version),
        mode = escape(&f.mode),
        up = f.uptime_secs,
        bytes = f.store_bytes,
        size = mib(f.store_bytes),
        rooms = f.rooms_total,
        pending = f.pending_lpdus,
    );
    let _ = write!(h, "<h2>Rooms this server hubs ({})</h2>", f.rooms.len());
    h.push_str(
        "<table id=\"rooms\"><tr><th>Room</th><th>Name</th><th>Version</th><th>Joined members</th>\
         <th>Servers</th><th>Events</th></tr>",
    );
    for r in &f.rooms {
        let _ = write!(
            h,
            "<tr data-room-id=\"{id}\"><td><code>{id}</code></td><td>{name}</td><td>{version}</td>\
             <td class=\"members\">{members}</td><td>{servers}</td><td class=\"events\">{events}</td></tr>",
            id = escape(&r.room_id),
            name = escape(&r.name),
            version = escape(&r.version),
            members = r.joined_members,
            servers = r.servers,
            events = r.events,
        );
    }
    h.push_str("</table>");
    let _ = write!(h, "<h2>Destinations ({})</h2>", f.destinations.len());
    h.push_str(
        "<table id=\"destinations\"><tr><th>Server</th><th>State</th><th>Failures in a row</th>\
         <th>Queued</th><th>Behind (positions)</th><th>Waiting for (s)</th><th>Next retry in (s)</th>\
         <th>Last error</th></tr>",
    );
    for d in &f.destinations {
        let class = if d.state == "backing off" { "bad" } else { "ok" };
        let _ = write!(
            h,
            "<tr data-destination=\"{dest}\"><td>{dest}</td><td class=\"state {class}\">{state}</td>\
             <td class=\"failures\">{failures}</td><td class=\"depth\">{depth}</td><td>{lag}</td>\
             <td>{lag_secs}</td><td>{retry}</td><td>{error}</td></tr>",
            dest = escape(&d.destination),
            state = escape(&d.state),
            failures = d.failures,
            depth = d.queue_depth,
            lag = d.lag_positions,
            lag_secs = d.lag_secs,
            retry = d.retry_in_secs,
            error = escape(&d.last_error),
        );
    }
    h.push_str("</table>");
    let _ = write!(h, "<h2>Recent warnings and errors ({})</h2>", f.errors.len());
    h.push_str("<table id=\"errors\"><tr><th>When (ms)</th><th>Level</th><th>Where</th><th>What</th></tr>");
    for e in &f.errors {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.ts,
            escape(&e.level),
            escape(&e.target),
            escape(&e.text)
        );
    }
    h.push_str("</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_peers_and_users_named_is_escaped() {
        let facts = Facts {
            server_name: "hub".into(),
            rooms: vec![RoomLine { room_id: "!a:hub".into(), name: "<script>x</script>".into(), ..Default::default() }],
            destinations: vec![DestinationLine {
                destination: "evil\"><b>".into(),
                state: "backing off".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = render(&facts);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("evil&quot;&gt;&lt;b&gt;"));
        assert!(page.contains("class=\"state bad\""));
    }
}
