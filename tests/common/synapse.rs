//! A real Synapse for interop tests: a process of the pinned PyPI release,
//! configured for loopback federation (TLS listener with a throwaway
//! certificate, certificates not verified, loopback allowed, no notary,
//! rate limits raised, federation retries short).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Ca, Client};

/// The Python of a venv with `matrix-synapse` installed, from
/// `LMX_SYNAPSE_PYTHON`. Without it the Synapse tests are skipped, unless
/// `LMX_REQUIRE_SYNAPSE_TESTS` is set (as `scripts/test-all` does).
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("LMX_SYNAPSE_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("LMX_REQUIRE_SYNAPSE_TESTS").is_some() => {
            panic!("LMX_REQUIRE_SYNAPSE_TESTS is set but LMX_SYNAPSE_PYTHON is not")
        }
        None => {
            eprintln!("LMX_SYNAPSE_PYTHON is not set: skipping the Synapse tests (scripts/test-all sets it)");
            None
        }
    }
}

pub struct Synapse {
    pub name: String,
    pub client_port: u16,
    pub fed_port: u16,
    dir: PathBuf,
    python: PathBuf,
    child: Option<Child>,
}

impl Synapse {
    /// Writes the configuration and signing key; `start` runs it.
    pub fn new(python: &Path, dir: &Path, ca: &Ca, fed_port: u16, client_port: u16) -> Synapse {
        std::fs::create_dir_all(dir).unwrap();
        let name = format!("localhost:{fed_port}");
        let (cert, key) = ca.issue_named(&format!("synapse-{fed_port}"), &["localhost"]);
        let d = dir.display();
        let config = format!(
            r#"server_name: "{name}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {fed_port}
    tls: true
    bind_addresses: ["127.0.0.1"]
    type: http
    resources:
      - names: [federation]
        compress: false
  - port: {client_port}
    tls: false
    bind_addresses: ["127.0.0.1"]
    type: http
    resources:
      - names: [client, media]
        compress: false
tls_certificate_path: "{cert}"
tls_private_key_path: "{key}"
database:
  name: sqlite3
  args:
    database: "{d}/homeserver.db"
log_config: "{d}/log.yaml"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
macaroon_secret_key: "lmx-test-macaroon"
form_secret: "lmx-test-form"
registration_shared_secret: "lmx-test-shared"
enable_registration: true
enable_registration_without_verification: true
federation_verify_certificates: false
ip_range_whitelist: ["127.0.0.0/8", "::1/128"]
presence:
  enabled: false
default_room_version: "12"
rc_message: {{per_second: 1000, burst_count: 1000}}
rc_registration: {{per_second: 1000, burst_count: 1000}}
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_joins:
  local: {{per_second: 1000, burst_count: 1000}}
  remote: {{per_second: 1000, burst_count: 1000}}
rc_joins_per_room: {{per_second: 1000, burst_count: 1000}}
rc_invites:
  per_room: {{per_second: 1000, burst_count: 1000}}
  per_user: {{per_second: 1000, burst_count: 1000}}
  per_issuer: {{per_second: 1000, burst_count: 1000}}
rc_federation:
  window_size: 1000
  sleep_limit: 1000
  sleep_delay: 0
  reject_limit: 1000
  concurrent: 100
federation:
  client_timeout: 20s
  max_short_retry_delay: 1s
  max_long_retry_delay: 2s
  destination_min_retry_interval: 200
  destination_retry_multiplier: 1.2
  destination_max_retry_interval: 2s
"#,
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(dir.join("homeserver.yaml"), config).unwrap();
        let log = format!(
            r#"version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "{d}/homeserver.log"
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"#
        );
        std::fs::write(dir.join("log.yaml"), log).unwrap();
        let status = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml", "--generate-keys"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "synapse --generate-keys failed");
        Synapse { name, client_port, fed_port, dir: dir.to_owned(), python: python.to_owned(), child: None }
    }

    /// Starts the process and waits until its Client-Server API answers.
    pub async fn start(&mut self) {
        let out = std::fs::File::create(self.dir.join("stdout.log")).unwrap();
        let child = Command::new(&self.python)
            .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
            .current_dir(&self.dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        loop {
            let c = self.client();
            let probe =
                tokio::time::timeout(Duration::from_secs(2), c.try_call("GET", "/_matrix/client/versions", None));
            if let Ok(Some(a)) = probe.await {
                if a.status == 200 {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let out = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
                panic!("synapse exited with {status}:\n{out}\n{}", self.log_tail(40));
            }
            assert!(tokio::time::Instant::now() < deadline, "synapse did not come up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("signing.key")
    }

    pub fn client(&self) -> Client {
        Client::new(([127, 0, 0, 1], self.client_port).into())
    }

    /// Lines of its log that `keep` selects, for failure messages.
    pub fn log_lines(&self, keep: impl Fn(&str) -> bool) -> String {
        let text = std::fs::read_to_string(self.dir.join("homeserver.log")).unwrap_or_default();
        text.lines().filter(|l| keep(l)).collect::<Vec<_>>().join("\n")
    }

    /// Its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("homeserver.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Synapse started in `net`'s directory with a user `carol` registered,
/// where one is installed (`python`); else nothing.
pub async fn started_with_carol(net: &super::Net) -> (Option<Synapse>, Option<Client>) {
    let Some(py) = python() else { return (None, None) };
    let mut s = Synapse::new(&py, &net.dir.path().join("synapse"), &net.ca, super::free_port(), super::free_port());
    s.start().await;
    let carol = s.client().register("carol").await;
    (Some(s), Some(carol))
}
