//! A push gateway for tests: takes `POST /_matrix/push/v1/notify` on
//! loopback over real HTTP, keeps every body with the answer it got, and
//! answers as it is told (take, fail, or reject the pushkey).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// Answers with this status.
    Fail(u16),
    /// Answers 200 with every pushkey of the request rejected.
    Reject,
}

struct State {
    mode: Mode,
    /// Each request's body and the status it was answered with.
    seen: Vec<(u16, Value)>,
}

#[derive(Clone)]
pub struct Gateway {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Gateway {
    pub async fn start(mode: Mode) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State { mode, seen: Vec::new() }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(state.clone(), req));
                    let io = hyper_util::rt::TokioIo::new(sock);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Gateway { url, state }
    }

    pub fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Every request so far.
    pub fn attempts(&self) -> Vec<Value> {
        self.state.lock().unwrap().seen.iter().map(|(_, b)| b.clone()).collect()
    }

    /// The notifications it took (answered 200 without rejecting).
    pub fn delivered(&self) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state
            .seen
            .iter()
            .filter(|(s, b)| *s == 200 && b["rejected"].is_null())
            .map(|(_, b)| b["notification"].clone())
            .collect()
    }

    /// Notifications taken for this event.
    pub fn delivered_for(&self, event_id: &str) -> Vec<Value> {
        self.delivered().into_iter().filter(|n| n["event_id"] == event_id).collect()
    }
}

async fn answer(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path_ok = req.method() == hyper::Method::POST && req.uri().path() == "/_matrix/push/v1/notify";
    let is_json = req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    let (status, reply) = match (path_ok && is_json && body["notification"].is_object(), state.mode) {
        (false, _) => (400, json!({"errcode": "M_BAD_JSON"})),
        (true, Mode::Accept) => (200, json!({"rejected": []})),
        (true, Mode::Fail(s)) => (s, json!({})),
        (true, Mode::Reject) => {
            let keys: Vec<Value> = body["notification"]["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d["pushkey"].clone())
                .collect();
            (200, json!({ "rejected": keys }))
        }
    };
    let mut kept = body;
    if state.mode == Mode::Reject {
        kept["rejected"] = json!(true);
    }
    state.seen.push((status, kept));
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())))
        .unwrap();
    Ok(response)
}
