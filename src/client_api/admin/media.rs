//! Media through Synapse's admin paths: a user's uploads, quarantine (the
//! file is then served to nobody) and deletion.

use serde_json::{json, Value};

use super::{backwards, local_user, ok, paging, server_name, Acting, Reply};
use crate::client_api::Call;
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
    if from + limit < total {
        out["next_token"] = json!(from + limit);
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
