//! Command-line interface: `lmx serve` and `lmx inspect …`.

pub mod inspect;

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
        /// TOML configuration file; `LMX_` variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check events and JSON with the protocol core (stdin → stdout).
    #[command(subcommand)]
    Inspect(inspect::Inspect),
}
