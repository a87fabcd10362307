use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use lmx::cli::{db, inspect, Cli, Command, ConfigArgs, ConfigCommand, Db};

/// jemalloc instead of the C library's allocator: rooms that come and go
/// (resting, waking) leave glibc's heaps fragmented, jemalloc's size
/// classes and decay give the memory back (BENCHMARKS.md, "jemalloc").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: a background thread returns
/// freed pages to the system within a second (not on the next allocation),
/// so an idle server's RSS follows what it holds. `_RJEM_MALLOC_CONF` in
/// the environment adds to them (a small follower may trade speed for
/// memory with `tcache_max:4096`).
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "lmx: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Config(ConfigCommand::Check { config }) => {
            match lmx::config::Config::load_with(config.config.as_deref(), &config.options) {
                Ok(loaded) => {
                    for w in &loaded.warnings {
                        let _ = writeln!(std::io::stderr(), "warning: {w}");
                    }
                    let _ = write!(std::io::stdout(), "{}", loaded.config.masked_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "lmx: the configuration is refused: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Health { url } => match health(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "lmx health: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Db(cmd) => match run_db(cmd) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "lmx: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Admin(args) => match lmx::cli::admin::run(&args) {
            Ok((status, answer)) => {
                let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
                if (200..300).contains(&status) {
                    ExitCode::SUCCESS
                } else {
                    let _ = writeln!(std::io::stderr(), "lmx admin: the server answered {status}");
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "lmx admin: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => match bench(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "lmx bench: {e:#}");
                ExitCode::FAILURE
            }
        },
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

/// Runs a `db` command; `false` when it found damage.
fn run_db(cmd: Db) -> anyhow::Result<bool> {
    match cmd {
        Db::Check { config } => {
            let checked = db::check(&lmx::config::Config::load(config.as_deref())?)?;
            let _ = write!(std::io::stdout(), "{}", checked.text);
            Ok(checked.healthy)
        }
        Db::Seal { config } => {
            let done = db::seal(&lmx::config::Config::load(config.as_deref())?)?;
            let _ = writeln!(std::io::stdout(), "{done}");
            Ok(true)
        }
        Db::Backup { out, url, token_file } => {
            let token = lmx::cli::admin::token_from(token_file.as_deref())?;
            let bytes = lmx::cli::backup::backup(&url, &token, &out)?;
            let _ = writeln!(std::io::stdout(), "backup of {bytes} bytes written to {}", out.display());
            Ok(true)
        }
        Db::Migrate { from, to, config } => {
            use lmx::cli::StoreKind;
            anyhow::ensure!(
                from == StoreKind::Sled && to == StoreKind::Postgres,
                "lmx db migrate moves a store --from sled --to postgres"
            );
            let config = lmx::config::Config::load(config.as_deref())?;
            let done = lmx::cli::migrate::sled_to_postgres(&config)?;
            let _ = writeln!(
                std::io::stdout(),
                "moved {} key-value pairs ({} bytes) from {} into PostgreSQL and compared them; \
                 set storage.backend = \"postgres\" to serve from it",
                done.pairs,
                done.bytes,
                config.data_dir.join("db").display()
            );
            Ok(true)
        }
        Db::Restore { from, config } => {
            let config = lmx::config::Config::load(config.as_deref())?;
            let done = lmx::cli::backup::restore(&config, &from)?;
            let _ = writeln!(
                std::io::stdout(),
                "restored {} key-value pairs and {} files into {}",
                done.pairs,
                done.files,
                config.data_dir.display()
            );
            Ok(true)
        }
    }
}

/// `GET url` over plain HTTP: fine when it answers 200.
fn health(url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse()?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let within = std::time::Duration::from_secs(5);
    let (status, body) = lmx::cli::plain_http::request(url, "GET", path, None, None, within)?;
    anyhow::ensure!(status == 200, "{status}: {}", String::from_utf8_lossy(&body));
    Ok(())
}

fn bench(args: lmx::bench::Args) -> anyhow::Result<()> {
    let rows = tokio::runtime::Runtime::new()?.block_on(lmx::bench::run(&args))?;
    if args.json {
        let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

fn serve(args: ConfigArgs) -> anyhow::Result<()> {
    let loaded = lmx::config::Config::load_with(args.config.as_deref(), &args.options)?;
    lmx::admin::logging::init(&loaded.config.log)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // Taken from the start: SIGHUP's default action ends the process.
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        // A standby waits inside `build` for its store; a stop ends the wait.
        let stop = shutdown_signal();
        tokio::pin!(stop);
        let app = tokio::select! {
            app = lmx::app::App::build(loaded.config) => app?,
            _ = &mut stop => {
                tracing::info!("stopped before serving");
                return Ok(());
            }
        };
        let bound = app.addresses();
        tracing::info!(federation = %bound.federation, client = %bound.client, "listening");
        #[cfg(unix)]
        tokio::spawn(reload_on_hangup(hangups, args, app.reloader()));
        lmx::cli::systemd::notify("READY=1");
        app.run(stop).await
    })
}

/// SIGHUP reads the configuration again and applies what can change while
/// running: the log filter, rate and connection limits, and the federation
/// certificate (the rest takes effect at the next start); what is refused
/// changes nothing.
#[cfg(unix)]
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, args: ConfigArgs, reload: lmx::app::Reloader) {
    while hangups.recv().await.is_some() {
        lmx::cli::systemd::notify("RELOADING=1");
        match lmx::config::Config::load_with(args.config.as_deref(), &args.options) {
            Ok(loaded) => {
                let filter = lmx::admin::logging::wanted_filter(&loaded.config.log);
                match lmx::admin::logging::set_filter(&filter) {
                    Ok(()) => tracing::info!(%filter, "configuration reloaded: log filter applied"),
                    Err(e) => tracing::warn!(error = %e, "the new log filter is refused"),
                }
                match reload.apply(&loaded.config) {
                    Ok(()) => tracing::info!("configuration reloaded: limits applied, TLS certificate reloaded"),
                    Err(e) => tracing::warn!(error = %e, "SIGHUP: the TLS certificate is refused; the old one stays"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "SIGHUP: the configuration is refused; nothing changed"),
        }
        lmx::cli::systemd::notify("READY=1");
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    lmx::cli::systemd::notify("STOPPING=1");
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
