//! Media through Synapse's admin paths: a user's uploads, quarantine (the
//! file is then served to nobody) and deletion.

use serde_json::{json, Value};

use super::{backwards, local_user, ok, paging, server_name, Acting, Reply};
use crate::client_api::Call;
use crate::core::ids::ServerName;
use crate::store::{Batch, Op};
use crate::wire::Failure;

/// `GET /v1/users/{user}/media`: newest first unless `order_by`/`dir` say
/// otherwise (`created_ts`, `media_length`, `media_id`, `upload_name`,
/// `media_type`).
pub fn user_media(call: &Call, user: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    call.server.store.user(&user)?.ok_or_else(|| Failure::not_found("Unknown user"))?;
    let (from, limit) = paging(call)?;
    let store = &call.server.store;
    let mut media = Vec::new();
    for (id, _, pending) in store.user_media(&user)? {
        let Some(r) = store.media(&call.server.name, &id)? else { continue };
        media.push(json!({
            "media_id": id, "media_type": r.content_type, "media_length": (!pending).then_some(r.size),
            "upload_name": (!r.filename.is_empty()).then_some(&r.filename), "created_ts": r.created_ts,
            "last_access_ts": null, "url_cache": null,
            "quarantined_by": (!r.quarantined_by.is_empty()).then_some(&r.quarantined_by),
            "safe_from_quarantine": false, "user_id": user.as_str(), "authenticated": null,
            "sha256": (!r.sha256.is_empty()).then_some(&r.sha256),
        }));
    }
    let order = crate::http::query_get(&call.query, "order_by");
    let dir_given = crate::http::query_get(&call.query, "dir").is_some();
    let key = order.unwrap_or("created_ts");
    if !matches!(key, "created_ts" | "media_length" | "media_id" | "upload_name" | "media_type") {
        return Err(Failure::invalid_param(format!("order_by {key:?} is not supported")));
    }
    media.sort_by(|a, b| {
        let by = |v: &Value| match &v[key] {
            Value::Number(n) => format!("{:020}", n.as_i64().unwrap_or(0)),
            other => other.as_str().unwrap_or_default().to_owned(),
        };
        by(a).cmp(&by(b)).then_with(|| a["media_id"].as_str().cmp(&b["media_id"].as_str()))
    });
    // Neither given: newest first, as Synapse lists them.
    if (order.is_none() && !dir_given) || backwards(call)? {
        media.reverse();
    }
    let total = media.len();
    let page: Vec<Value> = media.into_iter().skip(from).take(limit).collect();
    let mut out = json!({"media": page, "total": total});
    if let Some(next) = super::next_from(from, limit, total) {
        out["next_token"] = json!(next);
    }
    ok(out)
}

/// `POST /v1/media/[un]quarantine/{server}/{id}`.
pub fn quarantine(call: &Call, server: &str, id: &str, acting: &Acting, on: bool) -> Result<Reply, Failure> {
    let server = server_name(server)?;
    let store = &call.server.store;
    let mut record = store.media(&server, id)?.ok_or_else(|| Failure::not_found("Unknown media"))?;
    record.quarantined_by = match (on, acting) {
        (false, _) => String::new(),
        (true, Some(user)) => user.to_string(),
        (true, None) => "admin".into(),
    };
    let mut b = Batch::new();
    b.push(Op::PutMedia { server, id: id.to_owned(), record });
    store.write(b)?;
    ok(json!({}))
}

/// `DELETE /v1/media/{server}/{id}`: a local file, its record and
/// thumbnails.
pub async fn delete(call: &Call, server: &str, id: &str) -> Result<Reply, Failure> {
    let server = server_name(server)?;
    if server != call.server.name {
        return Err(Failure::BadRequest("Can only delete local media".into()));
    }
    call.server.store.media(&server, id)?.ok_or_else(|| Failure::not_found("Unknown media"))?;
    call.server.media.delete(&server, id).await?;
    ok(json!({"deleted_media": [id], "total": 1}))
}

/// Sets or clears a quarantine on a stored record; whether one was there.
fn mark(call: &Call, server: &ServerName, id: &str, by: &str) -> Result<bool, Failure> {
    let store = &call.server.store;
    let Some(mut record) = store.media(server, id)? else { return Ok(false) };
    if record.quarantined_by == by {
        return Ok(false);
    }
    record.quarantined_by = by.to_owned();
    let mut b = Batch::new();
    b.push(Op::PutMedia { server: server.clone(), id: id.to_owned(), record });
    store.write(b)?;
    Ok(true)
}

fn quarantiner(acting: &Acting) -> String {
    acting.as_ref().map_or_else(|| "admin".to_owned(), |u| u.to_string())
}

/// `POST /v1/user/{user}/media/quarantine`: every upload of the user.
pub fn quarantine_user(call: &Call, user: &str, acting: &Acting) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    let by = quarantiner(acting);
    let mut n = 0;
    for (id, _, _) in call.server.store.user_media(&user)? {
        n += usize::from(mark(call, &call.server.name, &id, &by)?);
    }
    ok(json!({"num_quarantined": n}))
}

/// The `mxc://` URIs an event's content names (the file, its thumbnail).
fn mxc_uris(content: &Value, out: &mut Vec<(String, String)>) {
    for uri in [&content["url"], &content["info"]["thumbnail_url"], &content["file"]["url"]]
        .into_iter()
        .filter_map(Value::as_str)
    {
        if let Some((server, id)) = uri.strip_prefix("mxc://").and_then(|rest| rest.split_once('/')) {
            out.push((server.to_owned(), id.to_owned()));
        }
    }
}

/// `POST /v1/room/{room}/media/quarantine`: the media the room's events
/// name, as far as this server holds them.
pub fn quarantine_room(call: &Call, room: &str, acting: &Acting) -> Result<Reply, Failure> {
    let room = crate::core::ids::RoomId::parse(room).map_err(|_| Failure::not_found("Room not found"))?;
    let view = call.server.rooms.find_view(&room)?.ok_or_else(|| Failure::not_found("Room not found"))?;
    let store = &call.server.store;
    let mut uris = Vec::new();
    for id in store.list(&room, 0, view.length)? {
        let Some(rec) = store.event(&id)? else { continue };
        let pdu = crate::core::json::parse(&rec.json, crate::core::json::NumberPolicy::Ieee754).unwrap_or_default();
        mxc_uris(&pdu["content"], &mut uris);
    }
    let by = quarantiner(acting);
    let mut n = 0;
    for (server, id) in uris {
        let Ok(server) = ServerName::parse(&server) else { continue };
        n += usize::from(mark(call, &server, &id, &by)?);
    }
    ok(json!({"num_quarantined": n}))
}
