//! Server-side key backup: versions (an algorithm and its `auth_data`),
//! the newest of which is current and the only one written to, and the
//! room keys backed up in each. A key is replaced only by a better one.

use serde_json::{json, Value};

use super::E2ee;
use crate::core::ids::UserId;
use crate::core::json::Object;
use crate::store::records::UserKeyEntry;
use crate::store::{Batch, Op, StoreResult};
use crate::wire::Failure;

const VERSIONS: &str = "backup_version";
/// The last version number handed out, so a deleted one is never reused.
const LAST_VERSION: &str = "backup_last";
/// Sessions a user may keep in one backup version.
pub const MAX_BACKED_UP_SESSIONS: u64 = 1_000_000;

fn keys_kind(version: u64) -> String {
    format!("backup_keys/{version}")
}

/// Version numbers sort as text in the store: fixed width.
fn version_key(version: u64) -> String {
    format!("{version:020}")
}

/// A version's record: `{algorithm, auth_data, count}`, `number` its etag.
struct Version {
    number: u64,
    algorithm: Value,
    auth_data: Value,
    count: u64,
    etag: u64,
}

impl Version {
    fn answer(&self) -> Value {
        json!({
            "version": self.number.to_string(),
            "algorithm": self.algorithm,
            "auth_data": self.auth_data,
            "count": self.count,
            "etag": self.etag.to_string(),
        })
    }

    fn op(&self, user: &UserId) -> Op {
        let json = json!({"algorithm": self.algorithm, "auth_data": self.auth_data, "count": self.count});
        Op::PutUserKey {
            user: user.clone(),
            kind: VERSIONS.into(),
            a: version_key(self.number),
            b: String::new(),
            entry: UserKeyEntry { json: serde_json::to_vec(&json).unwrap_or_default(), number: self.etag },
        }
    }
}

/// Which of two backed-up copies of a session to keep: a verified one,
/// then the one that decrypts from earlier, then the less forwarded.
pub fn better_session(new: &Value, old: &Value) -> bool {
    let verified = |v: &Value| v.get("is_verified").and_then(Value::as_bool).unwrap_or(false);
    let first = |v: &Value| v.get("first_message_index").and_then(Value::as_u64).unwrap_or(u64::MAX);
    let forwarded = |v: &Value| v.get("forwarded_count").and_then(Value::as_u64).unwrap_or(u64::MAX);
    if verified(new) != verified(old) {
        return verified(new);
    }
    if first(new) != first(old) {
        return first(new) < first(old);
    }
    forwarded(new) < forwarded(old)
}

fn not_found() -> Failure {
    Failure::not_found("Unknown backup version")
}

/// A key backup request's target: every room, one room, or one session.
pub enum Scope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

impl E2ee {
    fn version(&self, user: &UserId, number: u64) -> StoreResult<Option<Version>> {
        let Some(e) = self.store.user_key(user, VERSIONS, &version_key(number), "")? else { return Ok(None) };
        let v: Value = serde_json::from_slice(&e.json).unwrap_or_default();
        Ok(Some(Version {
            number,
            algorithm: v["algorithm"].clone(),
            auth_data: v["auth_data"].clone(),
            count: v["count"].as_u64().unwrap_or(0),
            etag: e.number,
        }))
    }

    fn current_version(&self, user: &UserId) -> StoreResult<Option<Version>> {
        let all = self.store.user_keys(user, VERSIONS, None, usize::MAX)?;
        match all.last().and_then(|(a, _, _)| a.parse().ok()) {
            Some(n) => self.version(user, n),
            None => Ok(None),
        }
    }

    fn named_version(&self, user: &UserId, version: &str) -> Result<Version, Failure> {
        let n = version.parse::<u64>().map_err(|_| not_found())?;
        self.version(user, n)?.ok_or_else(not_found)
    }

    /// `POST room_keys/version`: a new current version.
    pub fn create_backup(&self, user: &UserId, algorithm: Value, auth_data: Value) -> Result<String, Failure> {
        let _guard = self.lock(user);
        let last = self.store.user_key(user, LAST_VERSION, "", "")?.map_or(0, |e| e.number);
        let v = Version { number: last + 1, algorithm, auth_data, count: 0, etag: 0 };
        let mut b = Batch::new();
        b.push(v.op(user));
        b.push(Op::PutUserKey {
            user: user.clone(),
            kind: LAST_VERSION.into(),
            a: String::new(),
            b: String::new(),
            entry: UserKeyEntry { json: Vec::new(), number: v.number },
        });
        self.store.write(b)?;
        Ok(v.number.to_string())
    }

    /// `GET room_keys/version[/{version}]`.
    pub fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<Value, Failure> {
        let v = match version {
            Some(version) => self.named_version(user, version)?,
            None => self.current_version(user)?.ok_or_else(|| Failure::not_found("No current backup version"))?,
        };
        Ok(v.answer())
    }

    /// `PUT room_keys/version/{version}`: new `auth_data`, same algorithm.
    pub fn update_backup(&self, user: &UserId, version: &str, body: &Object) -> Result<(), Failure> {
        let _guard = self.lock(user);
        let mut v = self.named_version(user, version)?;
        if body.get("version").is_some_and(|b| b.as_str() != Some(version)) {
            return Err(Failure::invalid_param("the body's version differs from the path's"));
        }
        if body.get("algorithm").is_some_and(|a| *a != v.algorithm) {
            return Err(Failure::invalid_param("a backup's algorithm cannot change"));
        }
        let auth_data = body.get("auth_data").filter(|a| a.is_object());
        v.auth_data = auth_data.cloned().ok_or_else(|| Failure::bad_json("auth_data must be an object"))?;
        let mut b = Batch::new();
        b.push(v.op(user));
        self.store.write(b)?;
        Ok(())
    }

    /// `DELETE room_keys/version/{version}`, with its keys.
    pub fn delete_backup(&self, user: &UserId, version: &str) -> Result<(), Failure> {
        let _guard = self.lock(user);
        let v = self.named_version(user, version)?;
        let mut b = Batch::new();
        b.push(Op::DeleteUserKeys {
            user: user.clone(),
            kind: VERSIONS.into(),
            a: Some(version_key(v.number)),
            b: Some(String::new()),
        });
        b.push(Op::DeleteUserKeys { user: user.clone(), kind: keys_kind(v.number), a: None, b: None });
        self.store.write(b)?;
        Ok(())
    }

    /// The version keys may be written to: the current one, by name.
    fn writable(&self, user: &UserId, version: &str) -> Result<Version, Failure> {
        let current = self.current_version(user)?;
        match current {
            Some(v) if v.number.to_string() == version => Ok(v),
            Some(v) => Err(Failure::WrongRoomKeysVersion(v.number.to_string())),
            None => Err(not_found()),
        }
    }

    /// `PUT room_keys/keys…`: `rooms` is room → session → key data. Each
    /// session is kept unless the backup holds a better copy. Answers the
    /// version's etag and count.
    pub fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        rooms: Vec<(String, String, Value)>,
    ) -> Result<Value, Failure> {
        let _guard = self.lock(user);
        let mut v = self.writable(user, version)?;
        let kind = keys_kind(v.number);
        let mut b = Batch::new();
        let mut changed = false;
        for (room, session, data) in rooms {
            if !data.is_object() {
                return Err(Failure::bad_json("a session's key data must be an object"));
            }
            let old = self.store.user_key(user, &kind, &room, &session)?;
            if let Some(old) = &old {
                let old: Value = serde_json::from_slice(&old.json).unwrap_or_default();
                if !better_session(&data, &old) {
                    continue;
                }
            } else {
                if v.count >= MAX_BACKED_UP_SESSIONS {
                    return Err(Failure::too_large(format!(
                        "a backup holds at most {MAX_BACKED_UP_SESSIONS} sessions"
                    )));
                }
                v.count += 1;
            }
            changed = true;
            let json = serde_json::to_vec(&data).unwrap_or_default();
            b.push(Op::PutUserKey {
                user: user.clone(),
                kind: kind.clone(),
                a: room,
                b: session,
                entry: UserKeyEntry { json, number: 0 },
            });
        }
        if changed {
            v.etag += 1;
            b.push(v.op(user));
            self.store.write(b)?;
        }
        Ok(json!({"etag": v.etag.to_string(), "count": v.count}))
    }

    /// `GET room_keys/keys…` of a version (any, not only the current).
    pub fn get_backup_keys(&self, user: &UserId, version: &str, scope: Scope<'_>) -> Result<Value, Failure> {
        let v = self.named_version(user, version)?;
        let kind = keys_kind(v.number);
        let parse = |e: &UserKeyEntry| serde_json::from_slice::<Value>(&e.json).unwrap_or_default();
        match scope {
            Scope::Session(room, session) => match self.store.user_key(user, &kind, room, session)? {
                Some(e) => Ok(parse(&e)),
                None => Err(Failure::not_found("No backed-up key for this session")),
            },
            Scope::Room(room) => {
                let mut sessions = Object::new();
                for (_, session, e) in self.store.user_keys(user, &kind, Some(room), usize::MAX)? {
                    sessions.insert(session, parse(&e));
                }
                Ok(json!({ "sessions": sessions }))
            }
            Scope::All => {
                let mut rooms = Object::new();
                for (room, session, e) in self.store.user_keys(user, &kind, None, usize::MAX)? {
                    let r = rooms.entry(room).or_insert_with(|| json!({"sessions": {}}));
                    r["sessions"][session] = parse(&e);
                }
                Ok(json!({ "rooms": rooms }))
            }
        }
    }

    /// `DELETE room_keys/keys…` of the current version.
    pub fn delete_backup_keys(&self, user: &UserId, version: &str, scope: Scope<'_>) -> Result<Value, Failure> {
        let _guard = self.lock(user);
        let mut v = self.writable(user, version)?;
        let kind = keys_kind(v.number);
        let gone = match scope {
            Scope::Session(room, session) => self.store.user_key(user, &kind, room, session)?.map_or(0, |_| 1),
            Scope::Room(room) => self.store.user_keys(user, &kind, Some(room), usize::MAX)?.len() as u64,
            Scope::All => v.count,
        };
        let (a, b_part) = match scope {
            Scope::Session(room, session) => (Some(room.to_owned()), Some(session.to_owned())),
            Scope::Room(room) => (Some(room.to_owned()), None),
            Scope::All => (None, None),
        };
        if gone > 0 {
            let mut b = Batch::new();
            b.push(Op::DeleteUserKeys { user: user.clone(), kind, a, b: b_part });
            v.count = v.count.saturating_sub(gone);
            v.etag += 1;
            b.push(v.op(user));
            self.store.write(b)?;
        }
        Ok(json!({"etag": v.etag.to_string(), "count": v.count}))
    }
}
