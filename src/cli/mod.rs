//! Command-line interface: `lmx serve`, `lmx admin …`, `lmx db …`, `lmx inspect …`.

pub mod admin;
pub mod backup;
pub mod db;
pub mod inspect;
pub mod migrate;
pub mod plain_http;
pub mod systemd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lmx", version, about = "A Linearized Matrix homeserver")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server. Without --config it runs on the embedded default
    /// (server name localhost:8448, data in ./lmx-data, loopback listeners).
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Asks a running server whether it is ready (`GET /ready` over plain
    /// HTTP, for container health checks): exits 0 when it answers 200.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8008/ready")]
        url: String,
    },
    /// Check events and JSON with the protocol core (stdin → stdout).
    #[command(subcommand)]
    Inspect(inspect::Inspect),
    /// The store: check, seal and restore offline (lmx must not be running
    /// on it); backup from a running server.
    #[command(subcommand)]
    Db(Db),
    /// The admin API of a running server (`admin.listen`), command by
    /// command.
    Admin(admin::Admin),
    /// Benchmarks: start servers, load them, print figures (BENCHMARKS.md).
    Bench(crate::bench::Args),
}

/// Where the configuration comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file; `LMX_` variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `key=value` (dotted key, TOML value or plain text), over the file
    /// and the environment; may be given many times.
    #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
    pub options: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration, then print it as it takes
    /// effect (secrets masked). Exits 1 when it is refused.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum Db {
    /// Verify the store (on a scratch copy; nothing is written): its
    /// commit record, list positions, events, hashes, signatures, state and
    /// stream. Exits 1 when it finds damage.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Record the store as it is now as committed, so `lmx serve` starts on
    /// it: after restoring an older copy, or to accept a loss.
    Seal {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Save a backup of a running server (through its admin listener): the
    /// store as of one moment, the signing key and the media files.
    Backup {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// The admin listener.
        #[arg(long, env = "LMX_ADMIN_URL", default_value = "http://127.0.0.1:8009")]
        url: String,
        /// A file holding the admin token; or set LMX_ADMIN_TOKEN.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Move a stopped server's store into an empty PostgreSQL database
    /// (`storage.postgres.url`), then compare the two. Afterwards set
    /// `storage.backend = "postgres"`.
    Migrate {
        #[arg(long, value_enum)]
        from: StoreKind,
        #[arg(long, value_enum)]
        to: StoreKind,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Restore a backup into a stopped server's data directory (its store
    /// must be empty), then record it as committed.
    Restore {
        /// The backup file.
        from: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Where a store is kept, for `lmx db migrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Sled,
    Postgres,
}
