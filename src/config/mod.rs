//! Configuration: an embedded default, an optional TOML file, `LMX_`
//! environment variables (`__` separates nesting levels, e.g.
//! `LMX_FEDERATION__LISTEN=0.0.0.0:8448`; variables that name no section,
//! such as `LMX_LOG` (the log filter), are not keys), then `--option
//! key=value` on the command line (`load.rs`). Every key is documented in
//! `config.example.toml`.

mod load;

pub use load::Loaded;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::ids::ServerName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A full server: hubs its users' rooms, keeps full history.
    Hub,
    /// A small server: bounded timeline cache for rooms hubbed elsewhere.
    Follower,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server_name: String,
    pub mode: Mode,
    pub data_dir: PathBuf,
    /// Ed25519 signing key; generated on first start. Default:
    /// `<data_dir>/signing.key`.
    pub signing_key_path: Option<PathBuf>,
    pub federation: Federation,
    pub client: Client,
    pub registration: Registration,
    pub storage: Storage,
    pub follower: Follower,
    pub http: Http,
    pub media: Media,
    pub turn: Turn,
    pub push: Push,
    pub log: Log,
    pub admin: Admin,
    pub metrics: Metrics,
}

/// The admin API, `lmx admin`'s server side and the status page, on a
/// listener of their own; off unless `listen` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<SocketAddr>,
    /// The bearer token that opens the admin API (besides the access
    /// tokens of users who are server admins); better from `token_file`.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The local part of the user who sends server notices (made on first
    /// use).
    pub notices_localpart: String,
}

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// Prometheus metrics on a listener of their own; off unless `listen` is
/// set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub listen: Option<SocketAddr>,
}

/// Logging (`LMX_LOG`, when set, overrides `level`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// A filter: `info`, `warn`, or per target (`info,lmx::request=warn`).
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people (colour only on a terminal, never with NO_COLOR).
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Delivery of notifications to the push gateways clients name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// Address ranges a gateway may sit in beyond the public internet
    /// (loopback and private ranges are refused otherwise, as for previews).
    pub allow_ip_ranges: Vec<ipnet::IpNet>,
    /// Whether a push carries the message's content, or only its ids for
    /// the app to fetch (`event_id_only` pushers never get content).
    pub include_content: bool,
    /// How long one gateway request may take, in milliseconds.
    pub request_timeout_ms: u64,
    /// Gateway requests in flight at once, for the whole server.
    pub max_concurrent_requests: usize,
}

/// TURN servers handed to clients for calls (`voip/turnServer`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// `turn:`/`turns:` URIs; none: no TURN server is offered.
    pub uris: Vec<String>,
    /// The TURN server's REST API secret (coturn `static-auth-secret`):
    /// each user gets a name and password that expire.
    pub shared_secret: Option<String>,
    pub shared_secret_file: Option<PathBuf>,
    /// Or one fixed name and password for everyone.
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// How long a shared-secret credential lasts, in seconds.
    pub user_lifetime_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    pub listen: SocketAddr,
    /// PEM certificate chain and key. Default: a self-signed pair generated
    /// under `<data_dir>/tls/` on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP in and out, for loopback test set-ups with peers that speak
    /// only HTTP. Refused unless `listen` is a loopback address.
    pub insecure_plaintext: bool,
    /// Server name (or `name:port`) → `ip:port`, like curl's `--resolve`.
    pub resolve: BTreeMap<String, SocketAddr>,
    /// Accept any certificate from peers (test set-ups only).
    pub trust_self_signed: bool,
    /// One more CA to trust, PEM (e.g. a test CA).
    pub extra_ca_file: Option<PathBuf>,
    /// Value served at `/.well-known/matrix/server`, if any.
    pub well_known_server: Option<String>,
    /// First retry delay towards an unreachable server; doubles up to
    /// `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Timeout of one outbound request (name look-up and connection
    /// included).
    pub request_timeout_ms: u64,
    /// Address ranges outbound requests may reach although they are
    /// loopback, private, link-local, unique-local, multicast or
    /// unspecified (refused by default; names in `resolve` are exempt).
    pub allow_ip_ranges: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub listen: SocketAddr,
    /// How long a participant's `send` waits for the hub to sequence the
    /// event before answering with a retryable error.
    pub send_wait_ms: u64,
    /// Event sends per second per user, and the burst allowed (0: no limit).
    pub send_per_second: f64,
    pub send_burst: f64,
    /// Logins and registrations per second per remote address, and burst.
    pub login_per_second: f64,
    pub login_burst: f64,
    /// Lifetime of an access token issued with a refresh token, in ms.
    pub refreshable_token_lifetime_ms: u64,
    /// Reverse proxies whose `X-Forwarded-For` names the real client
    /// (for rate limits); requests from other addresses cannot set it.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Open registration with the `m.login.dummy` stage.
    pub enabled: bool,
    /// Enables Synapse-style `/_synapse/admin/v1/register` (nonce + HMAC).
    pub shared_secret: Option<String>,
    /// Or a file holding it.
    pub shared_secret_file: Option<PathBuf>,
    /// Shortest password open registration accepts, in characters.
    pub min_password_length: usize,
    /// Open registration also needs a registration token the operator
    /// made (`/_synapse/admin/v1/registration_tokens`).
    pub requires_token: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Where the store lives: `sled` (`<data_dir>/db`) or `postgres`.
    pub backend: Backend,
    /// sled page cache, in MiB. Default: 64 for a hub, 16 for a follower.
    pub cache_mb: Option<u64>,
    /// Seconds a room may sit idle before its writer and state leave
    /// memory (it is read back from the store on its next use); 0 keeps
    /// every room loaded.
    pub room_idle_secs: u64,
    pub postgres: Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sled,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postgres {
    /// A libpq connection string or `postgresql://` URL; better from
    /// `url_file`, as it may hold a password.
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    /// A PEM file of CA certificates trusted for the database's TLS
    /// certificate, besides the system's; setting it requires TLS.
    pub ca_file: Option<PathBuf>,
    /// Connections this process keeps open.
    pub pool_size: usize,
    /// The serving process's lease on the database, in seconds: another
    /// process waiting for it takes over this long after the holder's last
    /// renewal (a process that cannot renew for this long stops itself).
    pub lease_secs: u64,
    /// What a process does while another serves the database.
    pub standby: Standby,
    /// A member never takes the lease: it writes rooms of its own beside
    /// the serving process from the start (`app/member.rs`).
    pub member: bool,
    /// The host other processes reach this one at when it serves (with
    /// the listeners' ports). Default: the listen address when it names
    /// one, else this machine's host name.
    pub advertise_host: Option<String>,
}

/// What a standby process does while it waits for the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standby {
    /// Listens on nothing.
    Wait,
    /// Answers `/health` (alive) and `/ready` (not ready) on the client
    /// address, and `503` to everything else.
    Probes,
    /// Listens on both addresses and forwards every request to the
    /// serving process (ready once it knows where that is).
    Forward,
}

impl Postgres {
    pub fn lease_term(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Follower {
    /// Whether a follower may create (and so hub) rooms.
    pub host_rooms: bool,
    /// Recent events kept per room hubbed elsewhere.
    pub timeline_cache: u64,
}

/// The media repository: files under `<data_dir>/media/`, named by their
/// SHA-256, their metadata in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// Largest upload, in bytes; also the largest remote file fetched.
    pub max_upload_bytes: u64,
    /// Bytes of media one local user may have stored; 0: no limit.
    pub user_quota_bytes: u64,
    /// Uploads per user (token bucket); 0 turns the limit off.
    pub uploads_per_second: f64,
    pub upload_burst: f64,
    /// Media ids reserved with `create` and not yet uploaded, per user.
    pub max_pending_per_user: u64,
    /// How long a reserved media id waits for its upload, in seconds.
    pub pending_expiry_secs: u64,
    /// Bytes of other servers' media kept; the oldest fetched goes first
    /// once over. 0: no limit. Default: none for a hub, 1 GiB for a
    /// follower.
    pub remote_cache_bytes: Option<u64>,
    /// Whether the deprecated unauthenticated download and thumbnail
    /// endpoints (`/_matrix/media/v3/...`) serve media. Off, they answer
    /// 404 `M_NOT_FOUND` as the spec allows once authenticated media is
    /// served.
    pub unauthenticated_legacy: bool,
    /// URL previews (`preview_url`): pages fetched by this server.
    pub url_previews: bool,
    /// Ranges previews may reach although private or special (loopback,
    /// RFC 1918...), which are refused otherwise.
    pub preview_allow_ip_ranges: Vec<ipnet::IpNet>,
}

/// Limits of both HTTP listeners: what one stranger can hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Open connections per listener, and per remote address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A new connection that sends nothing for this long is closed.
    pub first_byte_timeout_ms: u64,
    /// A connection with no request in flight and no traffic for this
    /// long is closed.
    pub idle_timeout_ms: u64,
    /// Longest time to receive one request body.
    pub body_timeout_ms: u64,
    /// Request body bytes held in memory at once, across all connections
    /// of a listener; a body that would exceed it waits, then is refused.
    pub body_bytes_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost:8448".into(),
            mode: Mode::Hub,
            data_dir: PathBuf::from("./lmx-data"),
            signing_key_path: None,
            federation: Federation {
                listen: ([127, 0, 0, 1], 8448).into(),
                tls_cert: None,
                tls_key: None,
                insecure_plaintext: false,
                resolve: BTreeMap::new(),
                trust_self_signed: false,
                extra_ca_file: None,
                well_known_server: None,
                retry_base_ms: 10_000,
                retry_max_ms: 3_600_000,
                request_timeout_ms: 30_000,
                allow_ip_ranges: Vec::new(),
            },
            client: Client {
                listen: ([127, 0, 0, 1], 8008).into(),
                send_wait_ms: 10_000,
                send_per_second: 200.0,
                send_burst: 1000.0,
                login_per_second: 5.0,
                login_burst: 50.0,
                refreshable_token_lifetime_ms: 300_000,
                trusted_proxies: Vec::new(),
            },
            registration: Registration {
                enabled: false,
                shared_secret: None,
                shared_secret_file: None,
                min_password_length: 8,
                requires_token: false,
            },
            storage: Storage {
                backend: Backend::Sled,
                cache_mb: None,
                room_idle_secs: 60,
                postgres: Postgres {
                    url: None,
                    url_file: None,
                    ca_file: None,
                    pool_size: 16,
                    lease_secs: 10,
                    standby: Standby::Wait,
                    member: false,
                    advertise_host: None,
                },
            },
            follower: Follower { host_rooms: true, timeline_cache: 500 },
            http: Http {
                max_connections: 4096,
                max_connections_per_ip: 256,
                first_byte_timeout_ms: 10_000,
                idle_timeout_ms: 75_000,
                body_timeout_ms: 60_000,
                body_bytes_in_flight: 256 << 20,
            },
            media: Media {
                max_upload_bytes: 50 << 20,
                user_quota_bytes: 0,
                uploads_per_second: 1.0,
                upload_burst: 20.0,
                max_pending_per_user: 50,
                pending_expiry_secs: 86_400,
                remote_cache_bytes: None,
                unauthenticated_legacy: false,
                url_previews: true,
                preview_allow_ip_ranges: Vec::new(),
            },
            log: Log { level: "info".into(), format: LogFormat::Pretty },
            admin: Admin { listen: None, token: None, token_file: None, notices_localpart: "server-notices".into() },
            metrics: Metrics { listen: None },
            push: Push {
                allow_ip_ranges: Vec::new(),
                include_content: true,
                request_timeout_ms: 10_000,
                max_concurrent_requests: 32,
            },
            turn: Turn {
                uris: Vec::new(),
                shared_secret: None,
                shared_secret_file: None,
                username: None,
                password: None,
                password_file: None,
                user_lifetime_secs: 86_400,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("server_name: {0}")]
    ServerName(#[from] crate::core::ids::IdError),
    #[error("federation.insecure_plaintext needs a loopback federation.listen address, not {0}")]
    PlaintextNotLoopback(SocketAddr),
    #[error("federation.resolve[{0:?}]: not a server name")]
    ResolveName(String),
    #[error("http.body_bytes_in_flight must be at least {0} (the largest request body)")]
    BodyBudget(usize),
    #[error("{0} must be above 0")]
    Zero(&'static str),
    #[error("{0}: {1}")]
    SecretFile(String, String),
    #[error("admin.token must have at least {0} characters (a guessable token opens the admin API)")]
    AdminToken(usize),
    #[error("storage.backend is \"postgres\": set storage.postgres.url or storage.postgres.url_file")]
    PostgresUrl,
    #[error("storage.postgres.member needs storage.backend = \"postgres\"")]
    MemberNeedsPostgres,
    #[error("--option {0:?}: expected key=value with a dotted key")]
    Option(String),
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        ServerName::validate_own(&self.server_name)?;
        let fed = &self.federation;
        if fed.insecure_plaintext && !fed.listen.ip().is_loopback() {
            return Err(ConfigError::PlaintextNotLoopback(fed.listen));
        }
        for name in fed.resolve.keys() {
            ServerName::parse(name).map_err(|_| ConfigError::ResolveName(name.clone()))?;
        }
        let http = &self.http;
        if http.body_bytes_in_flight < crate::core::event::MAX_SEND_BODY {
            return Err(ConfigError::BodyBudget(crate::core::event::MAX_SEND_BODY));
        }
        for (name, v) in [
            ("http.max_connections", http.max_connections as u64),
            ("http.max_connections_per_ip", http.max_connections_per_ip as u64),
            ("http.first_byte_timeout_ms", http.first_byte_timeout_ms),
            ("http.idle_timeout_ms", http.idle_timeout_ms),
            ("http.body_timeout_ms", http.body_timeout_ms),
            ("media.max_upload_bytes", self.media.max_upload_bytes),
            ("client.refreshable_token_lifetime_ms", self.client.refreshable_token_lifetime_ms),
            ("media.pending_expiry_secs", self.media.pending_expiry_secs),
            ("push.request_timeout_ms", self.push.request_timeout_ms),
            ("push.max_concurrent_requests", self.push.max_concurrent_requests as u64),
            ("storage.postgres.pool_size", self.storage.postgres.pool_size as u64),
            ("storage.postgres.lease_secs", self.storage.postgres.lease_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.storage.backend == Backend::Postgres && self.storage.postgres.url.is_none() {
            return Err(ConfigError::PostgresUrl);
        }
        if self.storage.postgres.member && self.storage.backend != Backend::Postgres {
            return Err(ConfigError::MemberNeedsPostgres);
        }
        if self.admin.token.as_ref().is_some_and(|t| t.trim().len() < MIN_ADMIN_TOKEN) {
            return Err(ConfigError::AdminToken(MIN_ADMIN_TOKEN));
        }
        Ok(())
    }

    pub fn server_name(&self) -> ServerName {
        ServerName::validate_own(&self.server_name).expect("validated at load")
    }

    /// The store's page cache: as configured, or by mode (followers are
    /// the small servers).
    pub fn store_cache_bytes(&self) -> u64 {
        let mb = self.storage.cache_mb.unwrap_or(match self.mode {
            Mode::Hub => 64,
            Mode::Follower => 16,
        });
        mb << 20
    }

    /// Bytes of remote media kept (0: no limit), by mode unless set.
    pub fn remote_media_cache_bytes(&self) -> u64 {
        self.media.remote_cache_bytes.unwrap_or(match self.mode {
            Mode::Hub => 0,
            Mode::Follower => 1 << 30,
        })
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_path.clone().unwrap_or_else(|| self.data_dir.join("signing.key"))
    }

    /// The federation listener's certificate, which every process of the
    /// server presents.
    pub fn tls_cert_path(&self) -> PathBuf {
        self.federation.tls_cert.clone().unwrap_or_else(|| self.data_dir.join("tls/cert.pem"))
    }

    pub fn tls_key_path(&self) -> PathBuf {
        self.federation.tls_key.clone().unwrap_or_else(|| self.data_dir.join("tls/key.pem"))
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Serialized, Toml};
    use figment::Figment;

    use super::*;

    #[test]
    fn the_example_file_is_the_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
        let from_file: Config =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::file_exact(path)).extract().unwrap();
        let want = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(serde_json::to_value(from_file).unwrap(), want);
        // Every key of the file is a key of the configuration.
        let bare: Result<Config, _> = Figment::from(Toml::file_exact(path)).extract();
        assert!(bare.is_ok(), "{bare:?}");
    }

    #[test]
    fn defaults_validate_and_plaintext_needs_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.server_name().as_str(), "localhost:8448");
        let mut bad = c.clone();
        bad.federation.insecure_plaintext = true;
        bad.federation.listen = ([0, 0, 0, 0], 8448).into();
        assert!(matches!(bad.validate(), Err(ConfigError::PlaintextNotLoopback(_))));
        let mut ip = c;
        ip.server_name = "127.0.0.1:8448".into();
        assert!(ip.validate().is_err(), "item 2: no IP literal as own name");
    }
}
