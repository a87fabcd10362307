//! Room commands between processes of this server (`room::relay`): a
//! process that is refused a room because another one owns it passes the
//! command to that process's federation listener, signed with the server's
//! own key; the owner accepts only requests its own key signed, hands the
//! command to the room's writer and answers what the writer answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::Node;
use crate::core::ids::RoomId;
use crate::core::json::Object;
use crate::room::RoomError;
use crate::store::Owner;
use crate::wire::Failure;

/// A room's state before an event can be large; the owner is trusted.
const MAX_ANSWER: usize = 256 * 1024 * 1024;
/// The owner may wait for its room's queue and, for a participant's send,
/// for the hub (`room::relay`).
const TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Why a relay got no answer from the room's writer.
enum Failed {
    /// No connection, or it broke: the owner may be gone.
    Transport(String),
    /// The owner answered, but not with its writer's answer.
    Refused(StatusCode, String),
}

pub fn path(room: &RoomId) -> String {
    format!("/_lmx/internal/v1/rooms/{}/relay", crate::http::encode_segment(room.as_str()))
}

type Sender = http2::SendRequest<Full<Bytes>>;

/// Connections to the other processes of this server: one HTTP/2
/// connection per process, shared by every command relayed to it and made
/// again once it fails. Over TLS, the other process presents this server's
/// own certificate (the processes share its files), which alone is trusted.
#[derive(Default)]
pub struct Relays {
    tls: OnceLock<Result<tokio_rustls::TlsConnector, String>>,
    /// By address; as many as processes have announced themselves.
    open: Mutex<HashMap<String, Sender>>,
}

impl Relays {
    fn connector(&self, node: &Node) -> Result<tokio_rustls::TlsConnector, String> {
        self.tls
            .get_or_init(|| crate::http::tls::pinned_connector(&node.config.tls_cert_path()).map_err(|e| e.to_string()))
            .clone()
    }

    async fn sender(&self, node: &Node, to: &str) -> Result<Sender, String> {
        if let Some(s) = self.open.lock().expect("poisoned").get(to).filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let connect = async {
            let tcp = TcpStream::connect(to).await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            if node.config.federation.insecure_plaintext {
                return handshake(TokioIo::new(tcp)).await;
            }
            let name =
                rustls::pki_types::ServerName::try_from(node.name.host().to_owned()).map_err(|e| e.to_string())?;
            let tls = self.connector(node)?.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            handshake(TokioIo::new(tls)).await
        };
        let sender =
            tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| "connect timed out".to_owned())??;
        self.open.lock().expect("poisoned").insert(to.to_owned(), sender.clone());
        Ok(sender)
    }

    fn failed(&self, to: &str) {
        self.open.lock().expect("poisoned").remove(to);
    }
}

async fn handshake<I>(io: TokioIo<I>) -> Result<Sender, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Pings find a connection to a process that went away without closing.
    let (sender, conn) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

fn unreachable(owner: &Owner, why: impl std::fmt::Display) -> RoomError {
    tracing::warn!(%owner, error = %why, "the process that owns a room did not answer");
    RoomError::Elsewhere(owner.clone())
}

/// Sends `command` to the process that owns `room`; its answer, or
/// `RoomError::Elsewhere` when it cannot be reached (the caller answers
/// "try again": the room moves once that process is gone).
pub async fn send(
    node: &Node,
    relays: &Relays,
    owner: &Owner,
    room: &RoomId,
    command: Value,
) -> Result<Value, RoomError> {
    let Some(to) = owner.federation_addr.as_deref() else {
        return Err(RoomError::Elsewhere(owner.clone()));
    };
    let path = path(room);
    let auth = super::xmatrix::sign_request(&node.key, "POST", &path, node.name.as_str(), Some(&command), false);
    let body = serde_json::to_vec(&command).map_err(|e| RoomError::Storage(e.to_string()))?;
    let scheme = if node.config.federation.insecure_plaintext { "http" } else { "https" };
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{scheme}://{}{path}", node.name))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, auth)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| RoomError::Storage(e.to_string()))?;
    let exchange = async {
        let transport = |e: String| Failed::Transport(e);
        let mut sender = relays.sender(node, to).await.map_err(transport)?;
        sender.ready().await.map_err(|e| transport(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(Failed::Refused(status, String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()));
        }
        serde_json::from_slice::<Value>(&bytes).map_err(|e| Failed::Refused(status, e.to_string()))
    };
    let gone = |why: String| {
        relays.failed(to);
        Err(unreachable(owner, why))
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(Failed::Transport(e))) => gone(e),
        Err(_) => gone("no answer in time".into()),
        // It no longer owns the room (it moved meanwhile): come back.
        Ok(Err(Failed::Refused(StatusCode::SERVICE_UNAVAILABLE, _))) => Err(RoomError::Elsewhere(owner.clone())),
        Ok(Err(Failed::Refused(status, why))) => {
            tracing::error!(%owner, %status, error = why, "the process that owns a room refused a relayed command");
            Err(RoomError::Storage(format!("the owning process answered {status}")))
        }
    }
}

/// The owner's side, for a request this server's own key signed: the
/// command handed to the room's writer here, and its answer. A room this
/// process does not own (it moved meanwhile) is refused, never relayed on.
pub async fn serve(node: &Arc<Node>, room: &RoomId, body: &Object) -> Result<Value, Failure> {
    let handle = node.rooms.find(room)?.ok_or(Failure::NotFound("This process does not know the room".into()))?;
    if let Some(owner) = handle.owner() {
        return Err(RoomError::Elsewhere(owner.clone()).into());
    }
    let (cmd, awaiting) = crate::room::relay::decode(handle.view().version, body).map_err(Failure::BadJson)?;
    handle.send(cmd).await?;
    Ok(awaiting.answer(Duration::from_millis(node.config.client.send_wait_ms)).await)
}
