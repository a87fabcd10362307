//! `lmx admin …`: the admin API from the command line. Each command is one
//! request to the admin listener (plain HTTP, meant for loopback); the
//! answer is printed as JSON, and an error answer exits 1.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct Admin {
    /// The admin listener (`admin.listen`).
    #[arg(long, env = "LMX_ADMIN_URL", default_value = "http://127.0.0.1:8009")]
    pub url: String,
    /// A file holding the admin token (`admin.token_file`); or set
    /// LMX_ADMIN_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// What the status page shows, as JSON.
    Server,
    /// Accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Registration tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Rooms.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// Servers this one delivers to.
    #[command(subcommand)]
    Destinations(DestinationsCommand),
    /// Uploaded media.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Reported events.
    #[command(subcommand)]
    Reports(ReportsCommand),
    /// Sends a server notice (a text message) to a local user.
    Notice { user: String, message: String },
    /// Forgets resolved server addresses and other servers' keys held in
    /// memory.
    FlushCaches,
    /// Shows the log filter, or sets it (`info`, `lmx=debug`, ...).
    LogLevel { filter: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    List {
        /// Part of the name or display name.
        #[arg(long)]
        name: Option<String>,
        /// Include deactivated accounts.
        #[arg(long)]
        deactivated: bool,
    },
    Show {
        user: String,
    },
    Create {
        user: String,
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        displayname: Option<String>,
    },
    Deactivate {
        user: String,
    },
    ResetPassword {
        user: String,
        #[arg(long)]
        password: String,
        /// Keep the user's sessions (they are ended by default).
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Makes the user a server admin (`--revoke`: no longer one).
    MakeAdmin {
        user: String,
        #[arg(long)]
        revoke: bool,
    },
    Devices {
        user: String,
    },
    /// Each device's last connection.
    Sessions {
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    List,
    New {
        /// The token (default: 16 random characters).
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows (default: unlimited).
        #[arg(long)]
        uses: Option<u64>,
    },
    Delete {
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    List {
        #[arg(long)]
        search: Option<String>,
    },
    /// A room's details, with its hub and list length.
    Show {
        room: String,
    },
    Members {
        room: String,
    },
    State {
        room: String,
    },
    /// Drops a followed room's cached history but the newest events (the
    /// hub keeps it; clients fetch it again when they page back).
    Purge {
        room: String,
        #[arg(long)]
        keep: Option<u64>,
    },
    /// The room's linked list around an event (the newest without one).
    ListAround {
        room: String,
        #[arg(long)]
        event: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Each destination with its delivery state and backlog.
    List,
    /// One destination, with the last position delivered in each room.
    Show { destination: String },
    /// Retry now (cuts a backoff short).
    Retry { destination: String },
}

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// A user's uploads.
    List {
        user: String,
    },
    Quarantine {
        server: String,
        media_id: String,
    },
    Unquarantine {
        server: String,
        media_id: String,
    },
    Delete {
        server: String,
        media_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    List,
    Show { id: String },
}

fn seg(s: &str) -> String {
    crate::http::encode_segment(s)
}

/// The request a command makes: method, path with query, body.
pub fn request_of(command: &AdminCommand) -> (&'static str, String, Option<Value>) {
    use AdminCommand as A;
    const S: &str = "/_synapse/admin";
    const L: &str = "/_lmx/admin/v1";
    match command {
        A::Server => ("GET", format!("{L}/server"), None),
        A::FlushCaches => ("POST", format!("{L}/caches/flush"), Some(json!({}))),
        A::LogLevel { filter: None } => ("GET", format!("{L}/log_level"), None),
        A::LogLevel { filter: Some(f) } => ("PUT", format!("{L}/log_level"), Some(json!({"filter": f}))),
        A::Notice { user, message } => (
            "POST",
            format!("{S}/v1/send_server_notice"),
            Some(json!({"user_id": user, "content": {"msgtype": "m.text", "body": message}})),
        ),
        A::Users(u) => users(u),
        A::Tokens(TokensCommand::List) => ("GET", format!("{S}/v1/registration_tokens"), None),
        A::Tokens(TokensCommand::New { token, uses }) => {
            let mut body = json!({});
            if let Some(t) = token {
                body["token"] = json!(t);
            }
            if let Some(n) = uses {
                body["uses_allowed"] = json!(n);
            }
            ("POST", format!("{S}/v1/registration_tokens/new"), Some(body))
        }
        A::Tokens(TokensCommand::Delete { token }) => {
            ("DELETE", format!("{S}/v1/registration_tokens/{}", seg(token)), None)
        }
        A::Rooms(r) => rooms(r),
        A::Destinations(DestinationsCommand::List) => ("GET", format!("{L}/destinations"), None),
        A::Destinations(DestinationsCommand::Show { destination }) => {
            ("GET", format!("{L}/destinations/{}", seg(destination)), None)
        }
        A::Destinations(DestinationsCommand::Retry { destination }) => {
            ("POST", format!("{L}/destinations/{}/retry", seg(destination)), Some(json!({})))
        }
        A::Media(MediaCommand::List { user }) => ("GET", format!("{S}/v1/users/{}/media", seg(user)), None),
        A::Media(MediaCommand::Quarantine { server, media_id }) => {
            ("POST", format!("{S}/v1/media/quarantine/{}/{}", seg(server), seg(media_id)), Some(json!({})))
        }
        A::Media(MediaCommand::Unquarantine { server, media_id }) => {
            ("POST", format!("{S}/v1/media/unquarantine/{}/{}", seg(server), seg(media_id)), Some(json!({})))
        }
        A::Media(MediaCommand::Delete { server, media_id }) => {
            ("DELETE", format!("{S}/v1/media/{}/{}", seg(server), seg(media_id)), None)
        }
        A::Reports(ReportsCommand::List) => ("GET", format!("{S}/v1/event_reports"), None),
        A::Reports(ReportsCommand::Show { id }) => ("GET", format!("{S}/v1/event_reports/{}", seg(id)), None),
    }
}

fn users(command: &UsersCommand) -> (&'static str, String, Option<Value>) {
    use UsersCommand as U;
    const S: &str = "/_synapse/admin";
    match command {
        U::List { name, deactivated } => {
            let mut q = format!("?deactivated={deactivated}");
            if let Some(n) = name {
                q.push_str(&format!("&name={}", seg(n)));
            }
            ("GET", format!("{S}/v2/users{q}"), None)
        }
        U::Show { user } => ("GET", format!("{S}/v2/users/{}", seg(user)), None),
        U::Create { user, password, admin, displayname } => {
            let mut body = json!({"admin": admin});
            if let Some(p) = password {
                body["password"] = json!(p);
            }
            if let Some(d) = displayname {
                body["displayname"] = json!(d);
            }
            ("PUT", format!("{S}/v2/users/{}", seg(user)), Some(body))
        }
        U::Deactivate { user } => ("POST", format!("{S}/v1/deactivate/{}", seg(user)), Some(json!({}))),
        U::ResetPassword { user, password, keep_sessions } => (
            "POST",
            format!("{S}/v1/reset_password/{}", seg(user)),
            Some(json!({"new_password": password, "logout_devices": !keep_sessions})),
        ),
        U::MakeAdmin { user, revoke } => {
            ("PUT", format!("{S}/v1/users/{}/admin", seg(user)), Some(json!({"admin": !revoke})))
        }
        U::Devices { user } => ("GET", format!("{S}/v2/users/{}/devices", seg(user)), None),
        U::Sessions { user } => ("GET", format!("{S}/v1/whois/{}", seg(user)), None),
    }
}

fn rooms(command: &RoomsCommand) -> (&'static str, String, Option<Value>) {
    use RoomsCommand as R;
    const S: &str = "/_synapse/admin";
    match command {
        R::List { search: None } => ("GET", format!("{S}/v1/rooms"), None),
        R::List { search: Some(t) } => ("GET", format!("{S}/v1/rooms?search_term={}", seg(t)), None),
        R::Show { room } => ("GET", format!("{S}/v1/rooms/{}", seg(room)), None),
        R::Members { room } => ("GET", format!("{S}/v1/rooms/{}/members", seg(room)), None),
        R::State { room } => ("GET", format!("{S}/v1/rooms/{}/state", seg(room)), None),
        R::Purge { room, keep } => {
            let body = keep.map_or(json!({}), |k| json!({"keep": k}));
            ("POST", format!("/_lmx/admin/v1/rooms/{}/purge", seg(room)), Some(body))
        }
        R::ListAround { room, event, limit } => {
            let mut q = format!("?limit={limit}");
            if let Some(e) = event {
                q.push_str(&format!("&around={}", seg(e)));
            }
            ("GET", format!("/_lmx/admin/v1/rooms/{}/list{q}", seg(room)), None)
        }
    }
}

/// The admin token: from `--token-file`, else `LMX_ADMIN_TOKEN`.
pub fn token(args: &Admin) -> anyhow::Result<String> {
    token_from(args.token_file.as_deref())
}

/// The admin token from a file, else `LMX_ADMIN_TOKEN`.
pub fn token_from(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // As the server reads it: without the line ending.
        return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    std::env::var("LMX_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("no admin token: give --token-file or set LMX_ADMIN_TOKEN"))
}

/// Makes the command's request; the status and the JSON answer.
pub fn run(args: &Admin) -> anyhow::Result<(u16, Value)> {
    let token = token(args)?;
    let (method, path, body) = request_of(&args.command);
    let within = std::time::Duration::from_secs(60);
    let (status, bytes) =
        super::plain_http::request(&args.url, method, &path, Some(&token), body.map(|b| b.to_string()), within)?;
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    Ok((status, value))
}
