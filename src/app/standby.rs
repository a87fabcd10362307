//! What a standby process answers while another process of the same
//! server holds the PostgreSQL store (`storage.postgres.standby`):
//! - `probes`: on the client address, `/health` is alive and `/ready` is
//!   not, so an orchestrator that probes every replica keeps standbys
//!   running and sends them nothing; every other request gets `503`;
//! - `forward`: on both addresses, every request goes on to the serving
//!   process (`forward.rs`), and `/ready` holds once it is known where
//!   that process serves and both listeners are up (federation needs the
//!   server's certificate, which the first serving process creates).
//!
//! The listeners close before the process takes over and binds its own.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::forward::{unavailable, Forwarder, Hop, InFlight};
use crate::config::Standby as Mode;
use crate::http::tls::ServerTls;
use crate::http::{json_response, serve, Body, Handler, Limits, SharedLimits};
use crate::store::{BoxFuture, LeaseHolder};

/// What a standby does with one request.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// A probe's answer.
    Answer(StatusCode, Value),
    /// `503`, with why.
    Refuse(&'static str),
    Forward,
}

/// The decision for `method path` in `mode`; `known`: whether the serving
/// process has said where it serves; `complete`: whether this standby
/// forwards on both addresses.
pub fn action(mode: Mode, method: &Method, path: &str, known: bool, complete: bool) -> Action {
    let probe = matches!(*method, Method::GET | Method::HEAD);
    let forwarding = mode == Mode::Forward && known;
    match path {
        "/health" if probe => Action::Answer(StatusCode::OK, json!({"status": "ok", "standby": true})),
        "/ready" if probe && forwarding && complete => {
            Action::Answer(StatusCode::OK, json!({"ready": true, "standby": true}))
        }
        "/ready" if probe => {
            let why = match mode {
                Mode::Forward if !complete => "standby: federation is not forwarded yet (no certificate)",
                Mode::Forward => "standby: the serving process has not said where it serves yet",
                _ => "standby: another lmx process serves this database",
            };
            Action::Answer(StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false, "reasons": [why]}))
        }
        _ if forwarding => Action::Forward,
        _ if mode == Mode::Forward => Action::Refuse("the serving process is not known here yet; try again"),
        _ => Action::Refuse("this lmx process is a standby; another process serves"),
    }
}

/// Where the serving process said it serves.
#[derive(Default, PartialEq)]
struct Upstream {
    client: Option<String>,
    federation: Option<String>,
}

struct StandbyHandler {
    mode: Mode,
    upstream: Arc<RwLock<Upstream>>,
    /// Bumped when the serving process moves: requests to the old one end.
    moved: watch::Sender<u64>,
    federation: bool,
    complete: bool,
    forwarder: Forwarder,
    retry_after_secs: u64,
}

impl Handler for StandbyHandler {
    fn handle(self: Arc<Self>, req: Request<Incoming>, remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        // Subscribed first: a move after the address is read still ends
        // the request.
        let moved = self.moved.subscribe();
        let to = {
            let up = self.upstream.read().expect("poisoned");
            if self.federation {
                up.federation.clone()
            } else {
                up.client.clone()
            }
        };
        match action(self.mode, req.method(), req.uri().path(), to.is_some(), self.complete) {
            Action::Forward => {
                let to = to.expect("known");
                Box::pin(async move { self.forwarder.forward(req, remote, &to, moved).await })
            }
            Action::Answer(status, body) => {
                let mut resp = json_response(status, &body);
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_secs));
                }
                Box::pin(async move { resp })
            }
            Action::Refuse(why) => {
                let resp = unavailable(why, self.retry_after_secs);
                Box::pin(async move { resp })
            }
        }
    }
}

/// A standby's listeners.
struct StandbyListeners {
    upstream: Arc<RwLock<Upstream>>,
    moved: watch::Sender<u64>,
    /// Whether it listens as its mode asks (federation too, to forward).
    complete: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the listeners need to know.
struct Setup {
    mode: Mode,
    client: SocketAddr,
    /// The federation address with its TLS (`None`: plain), forwarded
    /// over `hop`; only in `forward` mode.
    federation: Option<(SocketAddr, Option<Arc<ServerTls>>, Hop)>,
    limits: Limits,
    retry_after_secs: u64,
}

impl Setup {
    /// The listeners `config` asks for; `None` in `wait` mode.
    fn of(config: &crate::config::Config) -> anyhow::Result<Option<Setup>> {
        let pg = &config.storage.postgres;
        let fed = &config.federation;
        let federation = match pg.standby {
            Mode::Wait => return Ok(None),
            Mode::Probes => None,
            Mode::Forward if fed.insecure_plaintext => Some((fed.listen, None, Hop::Plain)),
            Mode::Forward => {
                // The serving process presents this server's certificate,
                // from the files the processes share: that one is trusted.
                let (cert, key) = (config.tls_cert_path(), config.tls_key_path());
                if cert.exists() && key.exists() {
                    let tls = ServerTls::load(&cert, &key)?;
                    Some((fed.listen, Some(tls), Hop::to_own_processes(config)?))
                } else {
                    tracing::info!(cert = %cert.display(), "standby: no TLS certificate yet; federation not forwarded");
                    None
                }
            }
        };
        Ok(Some(Setup {
            mode: pg.standby,
            client: config.client.listen,
            federation,
            limits: Limits::of(config),
            retry_after_secs: pg.lease_secs,
        }))
    }
}

/// A standby's listeners while it waits, set up again until complete
/// (the federation certificate appears once a serving process has made
/// it), or given up on when they cannot be.
#[derive(Default)]
pub struct Standing {
    listeners: Option<StandbyListeners>,
    given_up: bool,
}

impl Standing {
    /// Listens as `config` asks, following `holder`.
    pub async fn listen(&mut self, config: &crate::config::Config, holder: &LeaseHolder) {
        if !self.given_up && self.listeners.as_ref().is_none_or(|l| !l.complete) {
            self.set_up(config).await;
        }
        if let Some(l) = &self.listeners {
            l.follow(holder);
        }
    }

    async fn set_up(&mut self, config: &crate::config::Config) {
        let setup = match Setup::of(config) {
            Ok(Some(setup)) => setup,
            Ok(None) => return,
            Err(e) => return self.give_up(&e.to_string()),
        };
        // Nothing new to listen on until the certificate is there.
        if self.listeners.is_some() && setup.federation.is_none() {
            return;
        }
        if let Some(old) = self.listeners.take() {
            old.stop().await;
        }
        match StandbyListeners::start(setup).await {
            Ok(l) => self.listeners = Some(l),
            Err(e) => self.give_up(&e.to_string()),
        }
    }

    fn give_up(&mut self, why: &str) {
        self.given_up = true;
        tracing::warn!(error = why, "standby: cannot listen; waiting without");
    }

    /// Closes the listeners; their addresses are free on return.
    pub async fn stop(self) {
        if let Some(l) = self.listeners {
            l.stop().await;
        }
    }
}

impl StandbyListeners {
    async fn start(setup: Setup) -> std::io::Result<StandbyListeners> {
        let upstream = Arc::new(RwLock::new(Upstream::default()));
        let (moved, _) = watch::channel(0u64);
        let (stop, stopped) = watch::channel(false);
        let complete = setup.mode != Mode::Forward || setup.federation.is_some();
        // As many as this server would take from one address directly.
        let in_flight = InFlight::new(setup.limits.max_connections, setup.limits.max_connections_per_ip);
        let handler = |federation: bool, hop: Hop| {
            Arc::new(StandbyHandler {
                mode: setup.mode,
                upstream: upstream.clone(),
                moved: moved.clone(),
                federation,
                complete,
                forwarder: Forwarder::new(hop, in_flight.clone()),
                retry_after_secs: setup.retry_after_secs,
            })
        };
        // Both bound before either serves, so a refusal leaves nothing open.
        let client = TcpListener::bind(setup.client).await?;
        let federation = match setup.federation {
            Some((addr, tls, hop)) => Some((TcpListener::bind(addr).await?, tls, hop)),
            None => None,
        };
        let limits = SharedLimits::new(setup.limits);
        let mut tasks =
            vec![tokio::spawn(serve(client, None, handler(false, Hop::Plain), limits.clone(), stopped.clone()))];
        if let Some((listener, tls, hop)) = federation {
            if let Some(tls) = &tls {
                tasks.push(tokio::spawn(tls.clone().keep_reading(stopped.clone())));
            }
            tasks.push(tokio::spawn(serve(listener, tls, handler(true, hop), limits, stopped)));
        }
        Ok(StandbyListeners { upstream, moved, complete, stop, tasks })
    }

    /// Follows the lease's holder as it is found; when it has moved,
    /// requests still waiting on the old one end.
    fn follow(&self, holder: &LeaseHolder) {
        let now = Upstream { client: holder.client_addr.clone(), federation: holder.federation_addr.clone() };
        let mut up = self.upstream.write().expect("poisoned");
        if *up != now {
            *up = now;
            self.moved.send_modify(|n| *n += 1);
        }
    }

    /// Closes the listeners and their connections; the addresses are free
    /// on return.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probing_standby_is_alive_not_ready_and_serves_nothing_else() {
        let act = |m: &Method, p: &str| action(Mode::Probes, m, p, true, true);
        assert_eq!(
            act(&Method::GET, "/health"),
            Action::Answer(StatusCode::OK, json!({"status": "ok", "standby": true}))
        );
        let Action::Answer(status, body) = act(&Method::GET, "/ready") else { panic!("answered") };
        assert_eq!((status, body["ready"].as_bool()), (StatusCode::SERVICE_UNAVAILABLE, Some(false)));
        for (method, path) in [(Method::GET, "/_matrix/client/versions"), (Method::POST, "/health")] {
            assert!(matches!(act(&method, path), Action::Refuse(_)), "{method} {path}");
        }
    }

    #[test]
    fn a_forwarding_standby_is_ready_and_forwards_once_it_knows_where_to() {
        let act = |p: &str, known| action(Mode::Forward, &Method::GET, p, known, true);
        let Action::Answer(status, _) = act("/ready", false) else { panic!("answered") };
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(matches!(act("/_matrix/client/versions", false), Action::Refuse(_)));
        assert!(matches!(act("/ready", true), Action::Answer(StatusCode::OK, _)));
        assert_eq!(act("/_matrix/client/versions", true), Action::Forward);
        assert!(matches!(act("/health", true), Action::Answer(StatusCode::OK, _)));
        // Not ready while federation cannot be forwarded, though the client
        // API is.
        let Action::Answer(status, body) = action(Mode::Forward, &Method::GET, "/ready", true, false) else {
            panic!("answered")
        };
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["reasons"][0].as_str().unwrap().contains("federation"));
        assert_eq!(action(Mode::Forward, &Method::GET, "/_matrix/client/versions", true, false), Action::Forward);
    }
}
