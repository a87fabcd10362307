//! Profiles: display name and avatar. A change is also sent as a new
//! member event in every room the user is joined to.

use serde_json::{json, Value};

use super::rooms::{draft, submit};
use super::Call;
use crate::core::ids::UserId;
use crate::core::rooms::StateView;
use crate::store::{Batch, Op};
use crate::wire::Failure;

fn user_id(s: &str) -> Result<UserId, Failure> {
    UserId::parse(s).map_err(|e| Failure::invalid_param(e.to_string()))
}

/// The profile fields a local user's join carries (those that are set).
pub fn member_fields(call: &Call, user: &UserId) -> Result<crate::core::json::Object, Failure> {
    let mut out = crate::core::json::Object::new();
    if let Some(rec) = call.server.store.user(user)? {
        for (name, value) in [("displayname", rec.displayname), ("avatar_url", rec.avatar_url)] {
            if !value.is_empty() {
                out.insert(name.into(), json!(value));
            }
        }
    }
    Ok(out)
}

/// `{displayname, avatar_url}` of a local user, or of a remote one as seen
/// in the rooms the asker shares with them.
fn profile_of(call: &Call, user: &UserId) -> Result<Value, Failure> {
    let mut out = json!({});
    if user.is_on(&call.server.name) {
        let rec = call.server.store.user(user)?.ok_or_else(|| Failure::not_found("Profile not found"))?;
        if !rec.displayname.is_empty() {
            out["displayname"] = json!(rec.displayname);
        }
        if !rec.avatar_url.is_empty() {
            out["avatar_url"] = json!(rec.avatar_url);
        }
        return Ok(out);
    }
    // Only rooms the asker is in (or invited to): what they may see, and a
    // lookup costs rooms they share rather than every room of the server.
    let Some((asker, _)) = &call.user else {
        return Err(Failure::not_found("Profile not found"));
    };
    let shared = call.server.store.memberships(asker)?;
    let shared = shared.iter().filter(|(_, m)| m.membership == "join" || m.membership == "invite");
    for (room, _) in shared {
        let Some(view) = call.server.rooms.get_view(room) else { continue };
        if let Some(m) = view.state.member(user.as_str()) {
            for k in ["displayname", "avatar_url"] {
                if let Some(v) = m.content().get(k).filter(|v| v.is_string()) {
                    out[k] = v.clone();
                }
            }
            return Ok(out);
        }
    }
    Err(Failure::not_found("Profile not found"))
}

pub async fn get(call: Call, user: &str, field: Option<&str>) -> Result<Value, Failure> {
    let user = user_id(user)?;
    let p = match profile_of(&call, &user) {
        // Not in a shared room: asked of the user's server.
        Err(Failure::NotFound(_)) if !user.is_on(&call.server.name) && call.user.is_some() => {
            call.server.remote.profile(&user, None).await?
        }
        other => other?,
    };
    match field {
        None => Ok(p),
        Some(f) => match p.get(f) {
            Some(v) => Ok(json!({ f: v })),
            None => Err(Failure::not_found("Profile field not set")),
        },
    }
}

pub async fn put(call: Call, user: &str, field: &str) -> Result<Value, Failure> {
    let (me, _) = call.who()?;
    let me = me.clone();
    if me.as_str() != user {
        return Err(Failure::forbidden("You may only change your own profile"));
    }
    if field != "displayname" && field != "avatar_url" {
        return Err(Failure::Unrecognized);
    }
    let value = call.body()?.get(field).and_then(Value::as_str).unwrap_or("").to_owned();
    set_field(&call, &me, field, &value).await?;
    Ok(json!({}))
}

/// Sets a profile field of `me` (the caller of `call`) and sends it to
/// every room they are in.
pub(super) async fn set_field(call: &Call, me: &UserId, field: &str, value: &str) -> Result<(), Failure> {
    let (me, value) = (me.clone(), value.to_owned());
    let mut rec = call.server.store.user(&me)?.ok_or_else(|| Failure::not_found("Unknown user"))?;
    if field == "displayname" {
        rec.displayname = value.clone();
    } else {
        rec.avatar_url = value.clone();
    }
    let mut b = Batch::new();
    b.push(Op::PutUser(rec));
    call.server.store.write(b)?;
    // The new profile in every joined room's member event.
    for (room, m) in call.server.store.memberships(&me)? {
        if m.membership != "join" {
            continue;
        }
        let Some(h) = call.server.rooms.get(&room) else { continue };
        let mut content = h.view().state.member(me.as_str()).map(|e| e.content().clone()).unwrap_or_default();
        content.insert("membership".into(), json!("join"));
        if value.is_empty() {
            content.remove(field);
        } else {
            content.insert(field.into(), json!(value));
        }
        if let Err(e) = submit(call, &room, draft(&me, "m.room.member", Some(me.as_str()), content)).await {
            tracing::info!(%room, error = %e, "profile change not sent to a room");
        }
    }
    Ok(())
}
