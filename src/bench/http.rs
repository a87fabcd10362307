//! The load generator's HTTP: one keep-alive HTTP/1.1 connection per
//! simulated client, as a real client keeps one.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub struct Conn {
    addr: SocketAddr,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    pub token: Option<String>,
    pub user_id: String,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None, token: None, user_id: String::new() }
    }

    /// The same account over a connection of its own.
    pub fn clone_session(&self) -> Conn {
        Conn { addr: self.addr, sender: None, token: self.token.clone(), user_id: self.user_id.clone() }
    }

    async fn sender(&mut self) -> anyhow::Result<&mut http1::SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = tokio::net::TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let (s, conn) = http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            self.sender = Some(s);
        }
        Ok(self.sender.as_mut().expect("just set"))
    }

    /// One request; the status and the JSON answer (`Null` when not JSON).
    pub async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = Request::builder().method(method).uri(path).header("host", "bench");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(bytes))?;
        let sender = self.sender().await?;
        sender.ready().await?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// As `call`, failing on any status but 200.
    pub async fn ok(&mut self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body).await?;
        anyhow::ensure!(status == 200, "{method} {path}: {status} {v}");
        Ok(v)
    }

    /// Registers `name` (open registration, dummy stage) and keeps its token.
    pub async fn register(&mut self, name: &str) -> anyhow::Result<()> {
        let body =
            serde_json::json!({"username": name, "password": "bench password", "auth": {"type": "m.login.dummy"}});
        let v = self.ok("POST", "/_matrix/client/v3/register", Some(&body)).await?;
        self.token = v["access_token"].as_str().map(str::to_owned);
        self.user_id = v["user_id"].as_str().unwrap_or_default().to_owned();
        Ok(())
    }
}

/// A path segment, percent-encoded.
pub fn enc(s: &str) -> String {
    crate::http::encode_segment(s)
}
