//! Real `lmx serve` processes, for what only a separate process can show:
//! `kill -9`, crash points, a damaged store, the command line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use lmx::config::Config;

use super::{free_port, Client, Net};

pub struct Proc {
    pub config: Config,
    pub config_path: PathBuf,
    child: Option<Child>,
    pub client: std::net::SocketAddr,
    /// `LMX_CRASH_POINT` for the next start.
    pub crash_point: Option<String>,
    /// Environment changes for the next start (`None` removes one).
    pub env: Vec<(String, Option<String>)>,
    log: PathBuf,
    starts: u32,
}

impl Proc {
    /// A server named `host:8448` of `net`, started.
    pub fn start(net: &Net, host: &str) -> Proc {
        let mut p = Proc::configured(net, net.config(host));
        p.spawn();
        p
    }

    /// A server with this configuration, not started yet.
    pub fn configured(net: &Net, mut config: Config) -> Proc {
        config.client.listen = ([127, 0, 0, 1], free_port()).into();
        let name = config.server_name.replace(':', "_");
        let config_path = net.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        let log = net.dir.path().join(format!("{name}.log"));
        Proc {
            client: config.client.listen,
            config,
            config_path,
            child: None,
            crash_point: None,
            env: Vec::new(),
            log,
            starts: 0,
        }
    }

    /// Another process of the same server: the same configuration file (so
    /// the same addresses), a log file of its own.
    pub fn replica(&self, n: u32) -> Proc {
        Proc {
            config: self.config.clone(),
            config_path: self.config_path.clone(),
            child: None,
            client: self.client,
            crash_point: None,
            env: Vec::new(),
            log: self.log.with_extension(format!("{n}.log")),
            starts: 0,
        }
    }

    /// Another process of the same server with addresses of its own (as
    /// on another machine), its configuration in a file of its own.
    pub fn replica_apart(&self, n: u32, net: &Net) -> Proc {
        let mut other = self.replica(n);
        other.config.federation.listen = ([127, 0, 0, 1], free_port()).into();
        other.config.client.listen = ([127, 0, 0, 1], free_port()).into();
        other.client = other.config.client.listen;
        other.config_path = net.dir.path().join(format!("replica-{n}.toml"));
        other.rewrite_config();
        other
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmx"));
        cmd.args(["serve", "--config"])
            .arg(&self.config_path)
            .env("LMX_LOG", std::env::var("LMX_LOG").unwrap_or_else(|_| "warn".into()))
            .env_remove("LMX_CRASH_POINT")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(p) = &self.crash_point {
            cmd.env("LMX_CRASH_POINT", p);
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    /// Sends a signal (SIGHUP, SIGTERM...) without waiting.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: a signal to our own child process.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    }

    /// Writes the configuration file again (for the next start or a SIGHUP).
    pub fn rewrite_config(&self) {
        std::fs::write(&self.config_path, toml::to_string(&self.config).unwrap()).unwrap();
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: a signal to our own child process.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let status = wait_timeout(&mut c, Duration::from_secs(60)).expect("lmx stops on SIGTERM");
            assert!(status.success(), "clean shutdown: {status}");
        }
    }

    /// Waits until the process has ended by itself (a crash point, a
    /// refusal to start) and returns how it ended.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        match wait_timeout(&mut c, within) {
            Some(s) => s,
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!("lmx did not exit within {within:?}; log:\n{}", self.log_text());
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Everything the process wrote to stderr, over all its starts.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Waits until the server answers (`true`) or its process ends
    /// (`false`: a crash point may fire while it starts).
    pub async fn ready_or_exit(&mut self) -> bool {
        let c = Client::new(self.client);
        for _ in 0..1200 {
            if c.try_call("GET", "/_matrix/client/versions", None).await.is_some_and(|a| a.status == 200) {
                return true;
            }
            if !self.is_running() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server at {} did not start; log:\n{}", self.client, self.log_text());
    }

    /// A client once the server answers (or panics after a long wait).
    pub async fn ready(&mut self) -> Client {
        let c = Client::new(self.client);
        for _ in 0..1200 {
            if c.try_call("GET", "/_matrix/client/versions", None).await.is_some_and(|a| a.status == 200) {
                // Answered by this process, not by another on the same port.
                assert!(self.is_running(), "lmx exited while starting; log:\n{}", self.log_text());
                return c;
            }
            if let Some(status) = self.child.as_mut().and_then(|ch| ch.try_wait().unwrap()) {
                panic!("lmx exited ({status}) while starting; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server at {} did not start; log:\n{}", self.client, self.log_text());
    }

    /// Runs `lmx <args> --config <this server's file>` to its end.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_lmx"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .env("LMX_LOG", "warn")
            .output()
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows what the server said: its temporary directory
        // goes away with the test.
        if std::thread::panicking() {
            let log = self.log_text();
            let mut from = log.len().saturating_sub(20_000);
            while !log.is_char_boundary(from) {
                from += 1;
            }
            let tail = &log[from..];
            eprintln!("--- log of {} (last 20 kB) ---\n{tail}", self.config.server_name);
        }
    }
}

fn wait_timeout(c: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
