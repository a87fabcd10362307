//! Server-side key backup (`room_keys/version…`, `room_keys/keys…`): the
//! rules are in `e2ee`; this reads requests and writes answers.

use http::Method;
use serde_json::{json, Value};

use super::Call;
use crate::e2ee::BackupScope;
use crate::http::query_get;
use crate::wire::Failure;

pub async fn create(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let algorithm = call.body()?.get("algorithm").filter(|a| a.is_string()).cloned();
    let algorithm = algorithm.ok_or_else(|| Failure::bad_json("algorithm must be a string"))?;
    let auth_data = call.body()?.get("auth_data").filter(|a| a.is_object()).cloned();
    let auth_data = auth_data.ok_or_else(|| Failure::bad_json("auth_data must be an object"))?;
    let version = call.server.e2ee.create_backup(user, algorithm, auth_data)?;
    call.server.store.flush().await?;
    Ok(json!({ "version": version }))
}

pub fn info(call: Call, version: Option<&str>) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    call.server.e2ee.backup_info(user, version)
}

pub async fn update(call: Call, version: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    call.server.e2ee.update_backup(user, version, call.body()?)?;
    call.server.store.flush().await?;
    Ok(json!({}))
}

pub async fn delete(call: Call, version: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    call.server.e2ee.delete_backup(user, version)?;
    call.server.store.flush().await?;
    Ok(json!({}))
}

/// The sessions a `PUT` carries at its level: `(room, session, data)`.
fn sessions_of(body: &Value, scope: &[&str]) -> Result<Vec<(String, String, Value)>, Failure> {
    let shape = |why: &str| Failure::bad_json(why.to_owned());
    let room_sessions = |room: &str, v: &Value| -> Result<Vec<(String, String, Value)>, Failure> {
        let sessions =
            v.get("sessions").and_then(Value::as_object).ok_or_else(|| shape("sessions must be an object"))?;
        Ok(sessions.iter().map(|(s, d)| (room.to_owned(), s.clone(), d.clone())).collect())
    };
    match scope {
        [] => {
            let rooms = body.get("rooms").and_then(Value::as_object).ok_or_else(|| shape("rooms must be an object"))?;
            let mut out = Vec::new();
            for (room, v) in rooms {
                out.extend(room_sessions(room, v)?);
            }
            Ok(out)
        }
        [room] => room_sessions(room, body),
        [room, session] => Ok(vec![((*room).to_owned(), (*session).to_owned(), body.clone())]),
        _ => Err(Failure::Unrecognized),
    }
}

/// `room_keys/keys[/{roomId}[/{sessionId}]]?version=`.
pub async fn keys(call: Call, method: &Method, scope: &[&str]) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let version =
        query_get(&call.query, "version").ok_or_else(|| Failure::MissingParam("version is required".into()))?;
    let level = match scope {
        [] => BackupScope::All,
        [room] => BackupScope::Room(room),
        [room, session] => BackupScope::Session(room, session),
        _ => return Err(Failure::Unrecognized),
    };
    let e2ee = &call.server.e2ee;
    match *method {
        Method::GET => e2ee.get_backup_keys(user, version, level),
        Method::PUT => {
            let sessions = sessions_of(&Value::Object(call.body()?.clone()), scope)?;
            let answer = e2ee.put_backup_keys(user, version, sessions)?;
            call.server.store.flush().await?;
            Ok(answer)
        }
        Method::DELETE => {
            let answer = e2ee.delete_backup_keys(user, version, level)?;
            call.server.store.flush().await?;
            Ok(answer)
        }
        _ => Err(Failure::MethodNotAllowed),
    }
}
