//! A real PostgreSQL for a test: its own cluster in a temporary directory,
//! on a loopback port, run as an unprivileged user (PostgreSQL refuses to
//! run as root), stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Who runs the server's programs, when the tests run as root.
    run_as: Option<String>,
}

/// The directory with initdb and pg_ctl: `LMX_POSTGRES_BIN`, else the
/// newest Debian install.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LMX_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| p.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    found.pop()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `config` moved onto the database at `url`: a small pool and a short
/// lease, so takeovers in tests happen within seconds; sends not rate
/// limited, as tests send under load.
pub fn on_postgres(config: &mut lmx::config::Config, url: &str) {
    config.client.send_per_second = 0.0;
    config.storage.backend = lmx::config::Backend::Postgres;
    config.storage.postgres.url = Some(url.to_owned());
    config.storage.postgres.pool_size = 4;
    config.storage.postgres.lease_secs = 3;
}

/// Hands a file or directory to `nobody`, who runs the cluster under root.
fn give_to_nobody(path: &Path) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap()
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g"))).unwrap();
}

impl Postgres {
    /// A running cluster, or `None` (the test skips) where PostgreSQL is
    /// not installed and `LMX_REQUIRE_POSTGRES` is not set.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("LMX_REQUIRE_POSTGRES").is_none(),
                "LMX_REQUIRE_POSTGRES is set but no PostgreSQL"
            );
            eprintln!("skipped: no PostgreSQL (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("lmx-pg").tempdir().unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then(|| "nobody".to_owned());
        if root {
            give_to_nobody(dir.path());
        }
        let pg = Postgres { dir, bin, port: free_port(), run_as };
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-U", "lmx", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200", pg.port, pg.path());
        let log = format!("{}/server.log", pg.path());
        pg.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"]);
        Some(pg)
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn data(&self) -> String {
        format!("{}/data", self.path())
    }

    /// One of the server's programs, as the user the cluster belongs to.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(Path::new(&self.path()).join("server.log")).unwrap_or_default()
        );
    }

    /// Turns TLS on with this certificate and key (PEM files), as a reload.
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = Path::new(&self.data()).join(name);
            std::fs::copy(from, &to).unwrap();
            // PostgreSQL refuses a key others may read.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            if self.run_as.is_some() {
                give_to_nobody(&to);
            }
        }
        self.sql("postgres", "ALTER SYSTEM SET ssl = on");
        self.run("pg_ctl", &["-D", &self.data(), "-w", "reload"]);
        // The reload is asynchronous: wait until new sessions see it.
        for _ in 0..100 {
            if self.sql("postgres", "SHOW ssl") == "on" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("TLS did not come on");
    }

    /// A new, empty database, as a connection URL for lmx.
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        self.run("createdb", &["-h", "127.0.0.1", "-p", &port, "-U", "lmx", name]);
        self.url(name)
    }

    pub fn url(&self, name: &str) -> String {
        format!("postgresql://lmx@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL in a database (as the cluster's superuser).
    pub fn sql(&self, name: &str, sql: &str) -> String {
        let exe = self.bin.join("psql");
        let port = self.port.to_string();
        let out = Command::new(exe)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "lmx", "-d", name, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
    }
}
