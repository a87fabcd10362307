//! The media endpoints: `/_matrix/media/{v3,r0,v1}/...` and the
//! authenticated `/_matrix/client/v1/media/...`. Uploads are streamed to
//! disk, so they are routed before any body is read; downloads and
//! thumbnails answer the file itself, not JSON.

use std::time::Duration;

use http::{Method, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::deps::ClientDeps;
use super::ratelimit::Limiter;
use crate::core::ids::{ServerName, UserId};
use crate::http::{ok_json, query_get, Body};
use crate::media::{content, Upload};
use crate::wire::Failure;

/// One media request, routed.
pub enum Route<'a> {
    Upload,
    UploadTo(&'a str, &'a str),
    Create,
    Config,
    PreviewUrl,
    Download { server: &'a str, id: &'a str, filename: Option<&'a str>, authenticated: bool },
    Thumbnail { server: &'a str, id: &'a str, authenticated: bool },
}

/// The media route of a path, if it is one (`Err` for a known path with
/// another method).
pub fn route<'a>(method: &Method, s: &[&'a str]) -> Option<Result<Route<'a>, Failure>> {
    let want = |m: Method, r: Route<'a>| if *method == m { Ok(r) } else { Err(Failure::MethodNotAllowed) };
    let get = |r| want(Method::GET, r);
    Some(match s {
        ["_matrix", "media", "v3" | "r0", "upload"] => want(Method::POST, Route::Upload),
        ["_matrix", "media", "v3", "upload", server, id] => want(Method::PUT, Route::UploadTo(server, id)),
        ["_matrix", "media", "v1", "create"] => want(Method::POST, Route::Create),
        ["_matrix", "media", "v3" | "r0", "config"] | ["_matrix", "client", "v1", "media", "config"] => {
            get(Route::Config)
        }
        ["_matrix", "media", "v3" | "r0", "preview_url"] | ["_matrix", "client", "v1", "media", "preview_url"] => {
            get(Route::PreviewUrl)
        }
        ["_matrix", "client", "v1", "media", "download", server, id, rest @ ..] if rest.len() <= 1 => {
            get(Route::Download { server, id, filename: rest.first().copied(), authenticated: true })
        }
        ["_matrix", "media", "v3" | "r0", "download", server, id, rest @ ..] if rest.len() <= 1 => {
            get(Route::Download { server, id, filename: rest.first().copied(), authenticated: false })
        }
        ["_matrix", "client", "v1", "media", "thumbnail", server, id] => {
            get(Route::Thumbnail { server, id, authenticated: true })
        }
        ["_matrix", "media", "v3" | "r0", "thumbnail", server, id] => {
            get(Route::Thumbnail { server, id, authenticated: false })
        }
        ["_matrix", "media", ..] | ["_matrix", "client", "v1", "media", ..] => Err(Failure::Unrecognized),
        _ => return None,
    })
}

/// What a media request brings.
pub struct MediaCall<'a> {
    pub deps: &'a ClientDeps,
    pub uploads: &'a Limiter,
    pub user: Option<&'a UserId>,
    pub query: &'a [(String, String)],
    pub content_type: Option<&'a str>,
}

pub async fn serve(call: MediaCall<'_>, route: Route<'_>, body: Incoming) -> Result<Response<Body>, Failure> {
    let authenticated =
        !matches!(route, Route::Download { authenticated: false, .. } | Route::Thumbnail { authenticated: false, .. });
    let user = match (authenticated, call.user) {
        (true, None) => return Err(Failure::MissingToken),
        (_, u) => u,
    };
    let media = &call.deps.media;
    match route {
        Route::Upload | Route::UploadTo(..) => {
            let user = user.ok_or(Failure::MissingToken)?;
            call.uploads.check(user.as_str())?;
            let reserved = match route {
                Route::UploadTo(server, id) => Some(reserved_id(call.deps, server, id)?),
                _ => None,
            };
            let content_type = call.content_type.unwrap_or("application/octet-stream");
            if !content::valid_content_type(content_type) {
                return Err(Failure::invalid_param("Content-Type must be a media type such as image/png"));
            }
            let filename = query_get(call.query, "filename");
            if filename.is_some_and(|f| !content::valid_filename(f)) {
                return Err(Failure::invalid_param("filename may not contain control characters or slashes"));
            }
            let upload = Upload { reserved, content_type, filename, now: crate::sys::now_ms() };
            let idle = Duration::from_millis(call.deps.config.http.body_timeout_ms);
            let id = media.upload(user, upload, body, idle).await?;
            Ok(ok_json(&match reserved {
                Some(_) => json!({}),
                None => json!({ "content_uri": format!("mxc://{}/{id}", call.deps.name) }),
            }))
        }
        Route::Create => {
            let user = user.ok_or(Failure::MissingToken)?;
            call.uploads.check(user.as_str())?;
            let (id, expires) = media.reserve(user, crate::sys::now_ms()).await?;
            Ok(ok_json(&json!({
                "content_uri": format!("mxc://{}/{id}", call.deps.name),
                "unused_expires_at": expires,
            })))
        }
        Route::Config => Ok(ok_json(&json!({ "m.upload.size": media.limits.max_upload }))),
        Route::PreviewUrl => {
            let user = user.ok_or(Failure::MissingToken)?;
            preview(&call, user).await
        }
        Route::Download { server, id, filename, authenticated } => {
            legacy_allowed(call.deps, authenticated)?;
            download(&call, server, id, filename).await
        }
        Route::Thumbnail { server, id, authenticated } => {
            legacy_allowed(call.deps, authenticated)?;
            thumbnail(&call, server, id).await
        }
    }
}

fn legacy_allowed(deps: &ClientDeps, authenticated: bool) -> Result<(), Failure> {
    if authenticated || deps.config.media.unauthenticated_legacy {
        Ok(())
    } else {
        Err(Failure::not_found("Media is served by the authenticated /_matrix/client/v1/media endpoints"))
    }
}

fn reserved_id<'a>(deps: &ClientDeps, server: &str, id: &'a str) -> Result<&'a str, Failure> {
    if server != deps.name.as_str() || !content::valid_media_id(id) {
        return Err(Failure::not_found("Unknown media id"));
    }
    Ok(id)
}

fn parse_target(server: &str, id: &str) -> Result<ServerName, Failure> {
    if !content::valid_media_id(id) {
        return Err(Failure::invalid_param("A media id is made of A-Z, a-z, 0-9, _ and -"));
    }
    ServerName::parse(server).map_err(|_| Failure::invalid_param("Not a server name"))
}

/// A file's record, fetched from its server first when it is remote and
/// not kept here.
async fn record_of(
    call: &MediaCall<'_>,
    server: &ServerName,
    id: &str,
) -> Result<crate::store::records::MediaRecord, Failure> {
    let media = &call.deps.media;
    let deadline = tokio::time::Instant::now() + crate::media::wait_of(call.query);
    if let Some(r) = media.ready(server, id, deadline).await? {
        return Ok(r);
    }
    if media.is_local(server) {
        return Err(Failure::not_found("Unknown media"));
    }
    let lock = media.fetch_lock(server, id);
    let _one = lock.lock().await;
    if let Some(r) = call.deps.store.media(server, id)?.filter(|r| !r.pending) {
        if !r.quarantined_by.is_empty() {
            return Err(Failure::not_found("Unknown media"));
        }
        return Ok(r);
    }
    let fetched = call.deps.remote.fetch_media(server, id, None, media.limits.max_upload).await?;
    let now = crate::sys::now_ms();
    media.keep_remote(server, id, &fetched.content_type, fetched.filename.as_deref(), &fetched.bytes, now).await
}

async fn download(
    call: &MediaCall<'_>,
    server: &str,
    id: &str,
    filename: Option<&str>,
) -> Result<Response<Body>, Failure> {
    let server = parse_target(server, id)?;
    let record = record_of(call, &server, id).await?;
    let served = call.deps.media.open(&record).await?;
    let name = filename.filter(|f| content::valid_filename(f)).or(served.filename.as_deref());
    let disposition = content::disposition(&served.content_type, name);
    Ok(crate::media::response(&served.content_type, &disposition, served.size, crate::http::file_body(served.file)))
}

async fn thumbnail(call: &MediaCall<'_>, server: &str, id: &str) -> Result<Response<Body>, Failure> {
    let server = parse_target(server, id)?;
    let size = crate::media::thumbnail_of(call.query)?;
    let media = &call.deps.media;
    let answer = |content_type: &str, bytes: Vec<u8>| {
        let len = bytes.len() as u64;
        crate::media::response(content_type, "inline; filename=\"thumbnail\"", len, crate::http::full(bytes))
    };
    if !media.is_local(&server) && call.deps.store.media(&server, id)?.is_none() {
        // Another server's file not kept here: its server's thumbnail,
        // else one made here from the file.
        let spec = content::thumbnail_spec(size);
        if let Some((t, bytes)) = media.kept_thumbnail(&server, id, &spec).await {
            return Ok(answer(&t.content_type, bytes));
        }
        let limit = media.limits.max_upload;
        match call.deps.remote.fetch_media(&server, id, Some(size), limit).await {
            Ok(f) if f.content_type.starts_with("image/") => {
                let t = media.keep_thumbnail(&server, id, &spec, &f.content_type, &f.bytes).await?;
                return Ok(answer(&t.content_type, f.bytes.to_vec()));
            }
            Err(e @ (Failure::NotFound(_) | Failure::NotYetUploaded)) => return Err(e),
            _ => {}
        }
    }
    let record = record_of(call, &server, id).await?;
    let (t, bytes) = media.thumbnail(&server, id, &record, size).await?;
    Ok(answer(&t.content_type, bytes))
}

/// Bytes of a page read for its preview.
const PAGE_LIMIT: usize = 1 << 20;

/// `GET .../preview_url`: the page's Open Graph data, its image kept as
/// the user's media (an `mxc://` URI), or an image's own details.
async fn preview(call: &MediaCall<'_>, user: &UserId) -> Result<Response<Body>, Failure> {
    if !call.deps.config.media.url_previews {
        return Err(Failure::Unrecognized);
    }
    let url = query_get(call.query, "url").ok_or_else(|| Failure::MissingParam("url is required".into()))?;
    if url.len() > 2048 {
        return Err(Failure::invalid_param("The URL is too long"));
    }
    let media = &call.deps.media;
    if let Some(kept) = media.kept_preview(url, crate::sys::now_ms()) {
        return Ok(ok_json(&kept));
    }
    call.uploads.check(user.as_str())?;
    let page = call.deps.remote.fetch_page(url, PAGE_LIMIT).await?;
    let mut og = serde_json::Map::new();
    let image = if page.content_type.starts_with("image/") {
        Some(page)
    } else if page.content_type.starts_with("text/html") || page.content_type.is_empty() {
        og = crate::media::preview::open_graph(&String::from_utf8_lossy(&page.body), &page.url);
        match og.get("og:image").and_then(Value::as_str).map(str::to_owned) {
            Some(img) => {
                let limit = usize::try_from(media.limits.max_upload).unwrap_or(usize::MAX);
                call.deps.remote.fetch_page(&img, limit).await.ok().filter(|p| p.content_type.starts_with("image/"))
            }
            None => None,
        }
    } else {
        return Err(Failure::BadRequest(format!("Cannot preview content of type {}", page.content_type)));
    };
    og.remove("og:image");
    if let Some(img) = image {
        let content_type = img.content_type.split(';').next().unwrap_or("image/png").trim().to_owned();
        if content::valid_content_type(&content_type) {
            let size = img.body.len();
            let dims = image_dimensions(&img.body);
            let upload =
                Upload { reserved: None, content_type: &content_type, filename: None, now: crate::sys::now_ms() };
            let body = http_body_util::Full::new(img.body);
            let id = media.upload(user, upload, body, Duration::from_secs(10)).await?;
            og.insert("og:image".into(), json!(format!("mxc://{}/{id}", call.deps.name)));
            og.insert("og:image:type".into(), json!(content_type));
            og.insert("matrix:image:size".into(), json!(size));
            if let Some((w, h)) = dims {
                og.insert("og:image:width".into(), json!(w));
                og.insert("og:image:height".into(), json!(h));
            }
        }
    }
    let answer = Value::Object(og);
    media.keep_preview(url, &answer, crate::sys::now_ms());
    Ok(ok_json(&answer))
}

fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()
}
