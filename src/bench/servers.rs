//! The servers of a scenario: real `lmx serve` processes (this binary) with
//! their own sled directories, TLS between them, durability as in
//! production; and Synapse processes for the comparisons. Each can be
//! asked what it has used so far (from `/proc`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::http::Conn;
use crate::config::{Config, Mode};

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// CPU seconds (user + system) and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

pub fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, stime the 15th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Usage { cpu_s: cpu_ticks / ticks, rss_mib: kib("VmRSS:") / 1024.0, peak_rss_mib: kib("VmHWM:") / 1024.0 }
}

/// Tells the kernel to forget a process's peak RSS (so a phase's peak is
/// its own).
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Something the scenarios measure: a server process.
pub trait Measured {
    fn label(&self) -> &str;
    fn pid(&self) -> u32;
    fn usage(&self) -> Usage {
        usage(self.pid())
    }
}

pub struct Lmx {
    pub name: String,
    label: String,
    pub client: SocketAddr,
    pub config: Config,
    config_path: PathBuf,
    child: Option<Child>,
}

/// A bench network: every lmx server's federation address, known before
/// any starts (names resolve through `federation.resolve`).
pub struct Net {
    pub dir: PathBuf,
    resolve: BTreeMap<String, SocketAddr>,
    postgres: Option<std::sync::Arc<super::pg::BenchDatabases>>,
}

impl Net {
    pub fn new(
        dir: &Path,
        hosts: &[&str],
        postgres: Option<std::sync::Arc<super::pg::BenchDatabases>>,
    ) -> anyhow::Result<Net> {
        std::fs::create_dir_all(dir)?;
        let mut resolve = BTreeMap::new();
        for h in hosts {
            resolve.insert(format!("{h}.bench"), SocketAddr::from(([127, 0, 0, 1], free_port()?)));
        }
        Ok(Net { dir: dir.to_owned(), resolve, postgres })
    }

    /// The configuration of `host`: TLS between servers (each server's
    /// generated certificate, trusted as self-signed), open registration,
    /// no client rate limits, everything else as shipped.
    pub fn config(&self, host: &str, mode: Mode) -> anyhow::Result<Config> {
        let mut c = Config {
            server_name: format!("{host}.bench:8448"),
            data_dir: self.dir.join(host),
            mode,
            ..Default::default()
        };
        c.federation.listen = self.resolve[&format!("{host}.bench")];
        c.federation.resolve = self.resolve.clone();
        c.federation.trust_self_signed = true;
        c.federation.retry_base_ms = 500;
        c.federation.retry_max_ms = 5_000;
        c.client.listen = ([127, 0, 0, 1], free_port()?).into();
        c.client.send_per_second = 0.0;
        c.client.login_per_second = 0.0;
        c.client.send_wait_ms = 60_000;
        // The load generator is one address with many connections.
        c.http.max_connections_per_ip = c.http.max_connections;
        c.registration.enabled = true;
        if let Some(pg) = &self.postgres {
            let run = self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("run").replace('-', "_");
            let name = format!("lmx_bench_{}_{run}_{host}", std::process::id());
            c.storage.backend = crate::config::Backend::Postgres;
            c.storage.postgres.url = Some(pg.fresh(&name)?);
        }
        Ok(c)
    }

    pub async fn start(&self, host: &str, mode: Mode) -> anyhow::Result<Lmx> {
        Lmx::start(self.config(host, mode)?, host).await
    }
}

impl Lmx {
    pub async fn start(config: Config, label: &str) -> anyhow::Result<Lmx> {
        std::fs::create_dir_all(&config.data_dir)?;
        // Named by label: processes of one server share a data directory.
        let config_path = config.data_dir.with_file_name(format!("{label}.toml"));
        std::fs::write(&config_path, toml::to_string(&config)?)?;
        let mut s = Lmx {
            name: config.server_name.clone(),
            label: label.to_owned(),
            client: config.client.listen,
            config,
            config_path,
            child: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.config_path.with_extension("log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            // `LMX_BENCH_LOG=debug` keeps each server's timings in its log.
            .env("LMX_LOG", std::env::var("LMX_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting lmx serve")?;
        self.child = Some(child);
        wait_for_client_api(self.client, Duration::from_secs(60)).await
    }

    /// SIGTERM and a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: a signal to our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::new(self.client)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Another process of this server that writes rooms of its own
    /// (`storage.postgres.member`).
    pub async fn member_replica(&self, n: u16) -> anyhow::Result<Lmx> {
        let mut config = self.config.clone();
        anyhow::ensure!(config.storage.backend == crate::config::Backend::Postgres, "members need PostgreSQL");
        config.storage.postgres.member = true;
        config.client.listen = ([127, 0, 0, 1], free_port()?).into();
        config.federation.listen = ([127, 0, 0, 1], free_port()?).into();
        Lmx::start(config, &format!("{}-{n}", self.label)).await
    }

    /// Process `n` of this server (on PostgreSQL), with addresses of its
    /// own, standing by and forwarding to the serving one; started once it
    /// answers through it.
    pub async fn forwarding_replica(&self, n: u16) -> anyhow::Result<Lmx> {
        let mut config = self.config.clone();
        anyhow::ensure!(config.storage.backend == crate::config::Backend::Postgres, "replicas need PostgreSQL");
        config.storage.postgres.standby = crate::config::Standby::Forward;
        config.client.listen = ([127, 0, 0, 1], free_port()?).into();
        config.federation.listen = ([127, 0, 0, 1], free_port()?).into();
        Lmx::start(config, &format!("{}-{n}", self.label)).await
    }
}

impl Measured for Lmx {
    fn label(&self) -> &str {
        &self.label
    }
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Lmx {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn wait_for_client_api(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut c = Conn::new(addr);
        if let Ok((200, _)) = c.call("GET", "/_matrix/client/versions", None).await {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the server at {addr} did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Synapse process of the installed PyPI release: SQLite, loopback
/// federation over TLS (certificates not verified), open registration,
/// rate limits raised so they do not decide the figures.
pub struct Synapse {
    pub name: String,
    label: String,
    pub client: SocketAddr,
    child: Option<Child>,
}

impl Synapse {
    pub async fn start(python: &Path, dir: &Path, label: &str) -> anyhow::Result<Synapse> {
        std::fs::create_dir_all(dir)?;
        let (fed_port, client_port) = (free_port()?, free_port()?);
        let name = format!("localhost:{fed_port}");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, cert.cert.pem())?;
        std::fs::write(&key_path, cert.key_pair.serialize_pem())?;
        let d = dir.display();
        let limit = "{per_second: 100000, burst_count: 100000}";
        let config = format!(
            r#"server_name: "{name}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {fed_port}
    tls: true
    bind_addresses: ["127.0.0.1"]
    type: http
    resources: [{{names: [federation], compress: false}}]
  - port: {client_port}
    tls: false
    bind_addresses: ["127.0.0.1"]
    type: http
    resources: [{{names: [client], compress: false}}]
tls_certificate_path: "{cert}"
tls_private_key_path: "{key}"
database: {{name: sqlite3, args: {{database: "{d}/homeserver.db"}}}}
log_config: "{d}/log.yaml"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
macaroon_secret_key: "bench-macaroon"
form_secret: "bench-form"
enable_registration: true
enable_registration_without_verification: true
federation_verify_certificates: false
ip_range_whitelist: ["127.0.0.0/8", "::1/128"]
presence: {{enabled: false}}
rc_message: {limit}
rc_registration: {limit}
rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}
rc_joins: {{local: {limit}, remote: {limit}}}
rc_joins_per_room: {limit}
rc_federation: {{window_size: 1000, sleep_limit: 100000, sleep_delay: 0, reject_limit: 100000, concurrent: 1000}}
"#,
            cert = cert_path.display(),
            key = key_path.display(),
        );
        std::fs::write(dir.join("homeserver.yaml"), config)?;
        std::fs::write(
            dir.join("log.yaml"),
            format!(
                "version: 1\nhandlers:\n  file:\n    class: logging.FileHandler\n    filename: \"{d}/homeserver.log\"\n\
                 root:\n  level: WARNING\n  handlers: [file]\ndisable_existing_loggers: false\n"
            ),
        )?;
        let keys = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml", "--generate-keys"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(keys.success(), "synapse --generate-keys failed");
        let out = std::fs::File::create(dir.join("stdout.log"))?;
        let child = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
            .current_dir(dir)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting synapse")?;
        let s =
            Synapse { name, label: label.to_owned(), client: ([127, 0, 0, 1], client_port).into(), child: Some(child) };
        wait_for_client_api(s.client, Duration::from_secs(180)).await?;
        Ok(s)
    }

    pub fn conn(&self) -> Conn {
        Conn::new(self.client)
    }
}

impl Measured for Synapse {
    fn label(&self) -> &str {
        &self.label
    }
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
