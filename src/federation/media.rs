//! Other servers' files, fetched when a local user asks for them: the
//! federation media endpoints (`multipart/mixed`), or the old
//! unauthenticated download for servers without them. Never more than the
//! size this server takes; redirects are not followed (they could point
//! anywhere, the outbound address policy included).

use http::{Method, StatusCode};

use super::client::FedError;
use super::Node;
use crate::core::ids::ServerName;
use crate::http::encode_segment;
use crate::media::content::{self, Method as Resize};
use crate::media::multipart;
use crate::wire::Failure;

/// Room for the multipart framing around a file.
const FRAMING: u64 = 64 << 10;

pub struct Fetched {
    pub content_type: String,
    pub filename: Option<String>,
    pub bytes: bytes::Bytes,
}

pub async fn fetch(
    node: &Node,
    server: &ServerName,
    id: &str,
    thumbnail: Option<(u32, u32, Resize)>,
    limit: u64,
) -> Result<Fetched, Failure> {
    let path = match thumbnail {
        None => format!("/_matrix/federation/v1/media/download/{}", encode_segment(id)),
        Some((w, h, m)) => format!(
            "/_matrix/federation/v1/media/thumbnail/{}?width={w}&height={h}&method={}&animated=false",
            encode_segment(id),
            m.as_str()
        ),
    };
    let cap = usize::try_from(limit.saturating_add(FRAMING)).unwrap_or(usize::MAX);
    let lm = super::fetch::lm_peer(node, server).await;
    let signed = node.fed.sign(server, Method::GET, &path, None, lm);
    match node.fed.send_signed_limited(&signed, cap).await {
        Ok(resp) => from_multipart(server, resp.content_type.as_deref(), &resp.body, limit),
        Err(e) if thumbnail.is_none() && e.is_unrecognized() => legacy(node, server, id, limit).await,
        Err(e) => Err(failure(server, e)),
    }
}

fn failure(server: &ServerName, e: FedError) -> Failure {
    match e {
        FedError::Status(_, StatusCode::NOT_FOUND, _) => {
            Failure::not_found(format!("{server} does not have this media"))
        }
        FedError::Status(..) if e.is_not_yet_uploaded() => Failure::NotYetUploaded,
        FedError::TooLarge(..) => Failure::RemoteTooLarge(format!("The file on {server} is too large")),
        other => {
            tracing::info!(error = %other, "fetching remote media failed");
            Failure::Remote(other.public())
        }
    }
}

fn from_multipart(
    server: &ServerName,
    content_type: Option<&str>,
    body: &[u8],
    limit: u64,
) -> Result<Fetched, Failure> {
    let bad = |why: &str| Failure::Remote(format!("{server} sent media in an unreadable form: {why}"));
    let boundary = content_type.and_then(multipart::boundary).ok_or_else(|| bad("not multipart/mixed"))?;
    let parts = multipart::parse(body, boundary).ok_or_else(|| bad("bad multipart body"))?;
    let file = parts.get(1).ok_or_else(|| bad("no file part"))?;
    if file.header("location").is_some() {
        return Err(Failure::Remote(format!("{server} answered with a redirect, which this server does not follow")));
    }
    if file.body.len() as u64 > limit {
        return Err(Failure::RemoteTooLarge(format!("The file on {server} is too large")));
    }
    let content_type = file
        .header("content-type")
        .filter(|c| content::valid_content_type(c))
        .unwrap_or("application/octet-stream")
        .to_owned();
    let filename = file.header("content-disposition").and_then(content::filename_of_disposition);
    Ok(Fetched { content_type, filename, bytes: bytes::Bytes::copy_from_slice(file.body) })
}

/// The unauthenticated download of servers that predate federation media.
async fn legacy(node: &Node, server: &ServerName, id: &str, limit: u64) -> Result<Fetched, Failure> {
    let path = format!(
        "/_matrix/media/v3/download/{}/{}?allow_remote=false&allow_redirect=false",
        encode_segment(server.as_str()),
        encode_segment(id)
    );
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let resp = node.fed.get_unsigned(server, &path, cap).await.map_err(|e| failure(server, e))?;
    let content_type = resp
        .content_type
        .filter(|c| content::valid_content_type(c))
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    Ok(Fetched { content_type, filename: None, bytes: resp.body })
}
