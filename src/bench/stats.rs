//! Figures of a benchmark run: latency percentiles, rates, per-process CPU
//! and memory, and the table they are printed in. Pure: the scenarios
//! measure, this only counts and formats.

use std::time::Duration;

use serde::Serialize;

/// Client `i`'s part of `events` spread over `n` clients.
pub fn share_of(events: u64, n: u64, i: usize) -> u64 {
    events / n + u64::from((i as u64) < events % n)
}

/// Latencies of one run, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// p50, p90, p99 and the maximum, in milliseconds (nearest rank).
    pub fn summary(&self) -> LatencySummary {
        let mut v = self.0.clone();
        v.sort_unstable();
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        LatencySummary { p50_ms: at(0.50), p90_ms: at(0.90), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What one server process used during the measured part of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessFigures {
    pub name: String,
    /// CPU seconds (user + system) per 1,000 events.
    pub cpu_s_per_1k: f64,
    pub peak_rss_mib: f64,
    pub end_rss_mib: f64,
}

/// One line of a results table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub scenario: String,
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub latency: LatencySummary,
    pub processes: Vec<ProcessFigures>,
    /// Free-form figures a scenario adds (catch-up time, RSS at rest...).
    pub notes: Vec<String>,
}

impl Row {
    pub fn new(scenario: impl Into<String>, events: u64, elapsed: Duration, latency: &Latencies) -> Row {
        let seconds = elapsed.as_secs_f64();
        Row {
            scenario: scenario.into(),
            events,
            seconds,
            events_per_s: if seconds > 0.0 { events as f64 / seconds } else { 0.0 },
            latency: latency.summary(),
            processes: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// The ratio of two rates, printed as "36.2×" (or "-" when undefined).
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a > 0.0 {
        format!("{:.1}×", a / b)
    } else {
        "-".into()
    }
}

/// Rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | events | events/s | p50 ms | p90 ms | p99 ms | max ms | CPU s per 1k events | peak RSS MiB | notes |\n\
         |---|---:|---:|---:|---:|---:|---:|---|---|---|\n",
    );
    for r in rows {
        let cpu: Vec<String> = r.processes.iter().map(|p| format!("{} {:.3}", p.name, p.cpu_s_per_1k)).collect();
        let rss: Vec<String> = r.processes.iter().map(|p| format!("{} {:.0}", p.name, p.peak_rss_mib)).collect();
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} |\n",
            r.scenario,
            r.events,
            r.events_per_s,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            cpu.join(", "),
            rss.join(", "),
            r.notes.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
        assert_eq!(ratio(3_500.0, 50.0), "70.0×");
        assert_eq!(ratio(1.0, 0.0), "-");
        let row = Row::new("x", 10, Duration::from_secs(2), &l);
        assert_eq!(row.events_per_s, 5.0);
        assert!(table(&[row]).contains("| x | 10 | 5 |"));
    }
}
