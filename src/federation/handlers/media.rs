//! Federation media (`GET /_matrix/federation/v1/media/download|thumbnail
//! /{mediaId}`): this server's own uploads, in `multipart/mixed` (an empty
//! JSON metadata part, then the file). Files fetched from other servers
//! are not passed on.

use bytes::Bytes;
use http::Response;

use crate::http::Body;
use crate::media::{content, multipart};
use crate::wire::Failure;

use super::super::inbound::Req;

pub async fn serve(req: Req, id: &str, thumbnail: bool) -> Result<Response<Body>, Failure> {
    let media = &req.node.media;
    let unknown = || Failure::not_found("Unknown media");
    if !content::valid_media_id(id) {
        return Err(unknown());
    }
    let size = if thumbnail { Some(crate::media::thumbnail_of(&req.query)?) } else { None };
    let deadline = tokio::time::Instant::now() + crate::media::wait_of(&req.query);
    let record = media.ready(&req.node.name, id, deadline).await?.ok_or_else(unknown)?;
    if record.uploader.is_empty() {
        return Err(unknown());
    }
    let boundary = crate::sys::random_string(32);
    let content_type = format!("multipart/mixed; boundary={boundary}");
    let (body, len) = match size {
        Some(size) => {
            let (thumb, bytes) = media.thumbnail(&req.node.name, id, &record, size).await?;
            let (head, tail) = multipart::frame(&boundary, &thumb.content_type, "inline; filename=\"thumbnail\"");
            let whole = [head, bytes, tail].concat();
            let len = whole.len() as u64;
            (crate::http::full(whole), len)
        }
        None => {
            let served = media.open(&record).await?;
            let disposition = content::disposition(&served.content_type, served.filename.as_deref());
            let (head, tail) = multipart::frame(&boundary, &served.content_type, &disposition);
            let len = head.len() as u64 + served.size + tail.len() as u64;
            (crate::http::framed_file_body(Bytes::from(head), served.file, Bytes::from(tail)), len)
        }
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_str(&content_type).map_err(Failure::failed)?);
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    Ok(r)
}
