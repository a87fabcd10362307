//! Command-line interface: `lmx inspect …` (and, with the server, `lmx serve`).

pub mod inspect;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lmx", version, about = "A Linearized Matrix homeserver")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check events and JSON with the protocol core (stdin → stdout).
    #[command(subcommand)]
    Inspect(inspect::Inspect),
}
