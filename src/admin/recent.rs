//! The last warnings and errors the server logged, kept in memory for the
//! status page (the log itself may be far away, in a journal or a
//! collector).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept; older ones fall off.
const KEPT: usize = 50;

/// One logged warning or error.
#[derive(Debug, Clone)]
pub struct Logged {
    pub ts: i64,
    pub level: String,
    pub target: String,
    /// The message, then the other fields as `key=value`.
    pub text: String,
}

static RECENT: Mutex<VecDeque<Logged>> = Mutex::new(VecDeque::new());

/// The kept lines, newest first.
pub fn recent() -> Vec<Logged> {
    RECENT.lock().expect("poisoned").iter().rev().cloned().collect()
}

/// Keeps `WARN` and `ERROR` events.
pub struct RecentLayer;

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let mut line = text.message;
        line.push_str(&text.fields);
        if line.len() > 1000 {
            let mut end = 1000;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        let logged = Logged {
            ts: crate::sys::now_ms(),
            level: level.to_string(),
            target: event.metadata().target().to_owned(),
            text: line,
        };
        let mut kept = RECENT.lock().expect("poisoned");
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(logged);
    }
}
