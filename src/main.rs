use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use lmx::cli::{inspect, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(cmd) => match inspect::run(cmd, &mut std::io::stdin().lock()) {
            inspect::Outcome::Ok(out) => {
                let _ = writeln!(std::io::stdout(), "{out}");
                ExitCode::SUCCESS
            }
            inspect::Outcome::Reject(out) => {
                let _ = writeln!(std::io::stdout(), "{out}");
                ExitCode::FAILURE
            }
            inspect::Outcome::Fail(reason) => {
                let _ = writeln!(std::io::stderr(), "{reason}");
                ExitCode::FAILURE
            }
        },
    }
}
