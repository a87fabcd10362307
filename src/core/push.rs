//! Push rules as the client-server spec has them: which actions an event
//! calls for, for one user. Kinds are tried in the spec's order (override,
//! content, room, sender, underride) and the first enabled rule that
//! matches decides. Pure: the room's facts come in a `PushContext`.

use serde_json::{json, Value};

/// What a rule evaluation needs to know of the room and the user.
pub struct PushContext<'a> {
    pub user_id: &'a str,
    /// The user's display name in the room, if any.
    pub display_name: Option<&'a str>,
    pub member_count: u64,
    pub sender_power: i64,
    /// The power `notifications.room` asks for (50 when unset).
    pub room_notification_power: i64,
}

/// What an event calls for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Actions {
    pub notify: bool,
    pub highlight: bool,
    pub sound: Option<String>,
}

pub fn event_match(key: &str, pattern: &str) -> Value {
    json!({"kind": "event_match", "key": key, "pattern": pattern})
}

fn rule(id: &str, enabled: bool, conditions: Value, actions: Value) -> Value {
    json!({"rule_id": id, "default": true, "enabled": enabled, "conditions": conditions, "actions": actions})
}

/// The spec's server-default rules for `user` (push module, "Predefined
/// Rules").
pub fn default_rules(user: &crate::core::ids::UserId) -> Value {
    let sound = |v: &str| json!(["notify", {"set_tweak": "sound", "value": v}]);
    let highlight_sound = json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]);
    let override_rules = vec![
        rule(".m.rule.master", false, json!([]), json!([])),
        rule(".m.rule.suppress_notices", true, json!([event_match("content.msgtype", "m.notice")]), json!([])),
        rule(
            ".m.rule.invite_for_me",
            true,
            json!([
                event_match("type", "m.room.member"),
                event_match("content.membership", "invite"),
                event_match("state_key", user.as_str())
            ]),
            sound("default"),
        ),
        rule(".m.rule.member_event", true, json!([event_match("type", "m.room.member")]), json!([])),
        rule(
            ".m.rule.is_user_mention",
            true,
            json!([{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user.as_str()}]),
            highlight_sound,
        ),
        rule(
            ".m.rule.is_room_mention",
            true,
            json!([{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
                   {"kind": "sender_notification_permission", "key": "room"}]),
            json!(["notify", {"set_tweak": "highlight"}]),
        ),
        rule(
            ".m.rule.tombstone",
            true,
            json!([event_match("type", "m.room.tombstone"), event_match("state_key", "")]),
            json!(["notify", {"set_tweak": "highlight"}]),
        ),
        rule(".m.rule.reaction", true, json!([event_match("type", "m.reaction")]), json!([])),
        rule(
            ".m.rule.room.server_acl",
            true,
            json!([event_match("type", "m.room.server_acl"), event_match("state_key", "")]),
            json!([]),
        ),
        rule(
            ".m.rule.suppress_edits",
            true,
            json!([{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}]),
            json!([]),
        ),
    ];
    let one_to_one = |t: &str| json!([{"kind": "room_member_count", "is": "2"}, event_match("type", t)]);
    let underride = vec![
        rule(".m.rule.call", true, json!([event_match("type", "m.call.invite")]), sound("ring")),
        rule(".m.rule.encrypted_room_one_to_one", true, one_to_one("m.room.encrypted"), sound("default")),
        rule(".m.rule.room_one_to_one", true, one_to_one("m.room.message"), sound("default")),
        rule(".m.rule.message", true, json!([event_match("type", "m.room.message")]), json!(["notify"])),
        rule(".m.rule.encrypted", true, json!([event_match("type", "m.room.encrypted")]), json!(["notify"])),
    ];
    json!({"global": {"override": override_rules, "content": [], "room": [], "sender": [], "underride": underride}})
}

const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// Why a client's push rule is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RuleError {
    Missing(&'static str),
    Invalid(String),
}

/// The actions of a client's rule, checked: `notify`, or `set_tweak`
/// objects; the historical `dont_notify` and `coalesce` are dropped, as the
/// spec asks.
pub fn checked_actions(actions: Option<&Value>) -> Result<Value, RuleError> {
    let list = actions.ok_or(RuleError::Missing("actions"))?;
    let list = list.as_array().ok_or_else(|| RuleError::Invalid("actions must be an array".into()))?;
    let mut out = Vec::new();
    for a in list {
        match a {
            Value::String(s) if s == "notify" => out.push(a.clone()),
            Value::String(s) if s == "dont_notify" || s == "coalesce" => {}
            Value::Object(o) if o.get("set_tweak").is_some_and(Value::is_string) => out.push(a.clone()),
            other => return Err(RuleError::Invalid(format!("unknown action {other}"))),
        }
    }
    Ok(Value::Array(out))
}

/// A client's rule of `kind` as it is stored, from the request body.
pub fn checked_rule(kind: &str, rule_id: &str, body: &serde_json::Map<String, Value>) -> Result<Value, RuleError> {
    let actions = checked_actions(body.get("actions"))?;
    let mut rule = json!({"rule_id": rule_id, "default": false, "enabled": true, "actions": actions});
    match kind {
        "content" => {
            let pattern = body.get("pattern").ok_or(RuleError::Missing("pattern"))?;
            if pattern.as_str().is_none_or(str::is_empty) {
                return Err(RuleError::Invalid("pattern must be a non-empty string".into()));
            }
            rule["pattern"] = pattern.clone();
        }
        "override" | "underride" => {
            let conditions = body.get("conditions").cloned().unwrap_or_else(|| json!([]));
            let ok =
                conditions.as_array().is_some_and(|cs| cs.iter().all(|c| c.get("kind").is_some_and(Value::is_string)));
            if !ok {
                return Err(RuleError::Invalid("conditions must be objects with a kind".into()));
            }
            rule["conditions"] = conditions;
        }
        // Room and sender rules are named by what they match.
        _ => {}
    }
    Ok(rule)
}

/// The actions `event` (PDU or client JSON) calls for under `ruleset` (the
/// `global` object of `m.push_rules`).
pub fn evaluate(ruleset: &Value, event: &Value, ctx: &PushContext<'_>) -> Actions {
    for kind in KINDS {
        for rule in ruleset.get(kind).and_then(Value::as_array).into_iter().flatten() {
            if rule.get("enabled").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let matched = match kind {
                "content" => rule.get("pattern").and_then(Value::as_str).is_some_and(|p| {
                    lookup(event, "content.body").and_then(Value::as_str).is_some_and(|b| word_glob(p, b))
                }),
                "room" => rule.get("rule_id").is_some_and(|id| Some(id) == event.get("room_id")),
                "sender" => rule.get("rule_id").is_some_and(|id| Some(id) == event.get("sender")),
                _ => rule
                    .get("conditions")
                    .and_then(Value::as_array)
                    .is_none_or(|cs| cs.iter().all(|c| condition(c, event, ctx))),
            };
            if matched {
                return actions(rule.get("actions"));
            }
        }
    }
    Actions::default()
}

fn actions(list: Option<&Value>) -> Actions {
    let mut out = Actions::default();
    for a in list.and_then(Value::as_array).into_iter().flatten() {
        match a {
            Value::String(s) if s == "notify" => out.notify = true,
            Value::Object(o) => match o.get("set_tweak").and_then(Value::as_str) {
                Some("highlight") => out.highlight = o.get("value").and_then(Value::as_bool).unwrap_or(true),
                Some("sound") => out.sound = o.get("value").and_then(Value::as_str).map(str::to_owned),
                _ => {}
            },
            _ => {}
        }
    }
    // A highlight without a notification is not shown.
    out.highlight &= out.notify;
    out
}

fn condition(c: &Value, event: &Value, ctx: &PushContext<'_>) -> bool {
    let key = c.get("key").and_then(Value::as_str).unwrap_or("");
    match c.get("kind").and_then(Value::as_str) {
        Some("event_match") => {
            let (Some(pattern), Some(value)) = (c.get("pattern").and_then(Value::as_str), lookup(event, key)) else {
                return false;
            };
            let Some(value) = value.as_str() else { return false };
            if key == "content.body" {
                word_glob(pattern, value)
            } else {
                glob(&pattern.to_lowercase(), &value.to_lowercase())
            }
        }
        Some("event_property_is") => {
            let want = c.get("value");
            want.is_some_and(|w| is_scalar(w) && lookup(event, key) == Some(w))
        }
        Some("event_property_contains") => {
            let want = c.get("value");
            want.is_some_and(|w| {
                is_scalar(w) && lookup(event, key).and_then(Value::as_array).is_some_and(|a| a.contains(w))
            })
        }
        Some("contains_display_name") => {
            let name = ctx.display_name.filter(|n| !n.is_empty());
            let body = lookup(event, "content.body").and_then(Value::as_str);
            matches!((name, body), (Some(n), Some(b)) if contains_word(&b.to_lowercase(), &n.to_lowercase()))
        }
        Some("room_member_count") => {
            c.get("is").and_then(Value::as_str).is_some_and(|is| member_count(is, ctx.member_count))
        }
        Some("sender_notification_permission") => key == "room" && ctx.sender_power >= ctx.room_notification_power,
        _ => false,
    }
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Bool(_) | Value::Null) || v.as_i64().is_some()
}

/// The value at a dotted path; `\.` and `\\` escape within a part.
pub fn lookup<'a>(event: &'a Value, key: &str) -> Option<&'a Value> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = key.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => match chars.next() {
                Some(next @ ('.' | '\\')) => cur.push(next),
                Some(other) => {
                    cur.push('\\');
                    cur.push(other);
                }
                None => cur.push('\\'),
            },
            '.' => parts.push(std::mem::take(&mut cur)),
            other => cur.push(other),
        }
    }
    parts.push(cur);
    parts.iter().try_fold(event, |at, part| at.get(part.as_str()))
}

fn member_count(is: &str, count: u64) -> bool {
    let (op, n) = match is.find(|c: char| c.is_ascii_digit()) {
        Some(i) => is.split_at(i),
        None => return false,
    };
    let Ok(n) = n.parse::<u64>() else { return false };
    match op {
        "" | "==" => count == n,
        "<" => count < n,
        ">" => count > n,
        "<=" => count <= n,
        ">=" => count >= n,
        _ => false,
    }
}

/// A glob (`*`, `?`) matching the whole of `text` (both lower case), in
/// linear time.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A glob matching some run of `text` that starts and ends at word
/// boundaries, case-insensitively (how `content.body` is matched).
fn word_glob(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.to_lowercase(), text.to_lowercase());
    if !pattern.contains(['*', '?']) {
        return contains_word(&text, &pattern);
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let boundary = |i: usize| {
        let before = i.checked_sub(1).map(|j| chars[j].1);
        let after = chars.get(i).map(|c| c.1);
        before.is_none_or(|b| !is_word_char(b)) || after.is_none_or(|a| !is_word_char(a))
    };
    let offset = |i: usize| chars.get(i).map_or(text.len(), |c| c.0);
    // Bodies are bounded by the event size; patterns by the rules a user sets.
    (0..=chars.len())
        .filter(|&s| boundary(s))
        .any(|s| (s..=chars.len()).filter(|&e| boundary(e)).any(|e| glob(&pattern, &text[offset(s)..offset(e)])))
}

/// `word` (several words allowed) in `text` at word boundaries.
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    text.match_indices(word).any(|(i, m)| {
        let before = text[..i].chars().next_back();
        let after = text[i + m.len()..].chars().next();
        before.is_none_or(|c| !is_word_char(c)) && after.is_none_or(|c| !is_word_char(c))
    })
}

#[cfg(test)]
mod rule_checks {
    use super::*;

    fn body(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn client_rules_are_checked() {
        let ok = checked_rule("content", "cake", &body(json!({"pattern": "cake", "actions": ["notify", "coalesce"]})));
        assert_eq!(ok.unwrap()["actions"], json!(["notify"]), "historical actions are dropped");
        let missing = checked_rule("content", "cake", &body(json!({"actions": []})));
        assert_eq!(missing, Err(RuleError::Missing("pattern")));
        assert_eq!(checked_rule("room", "!r:x", &body(json!({}))), Err(RuleError::Missing("actions")));
        for bad in [json!({"actions": "notify"}), json!({"actions": ["shout"]}), json!({"actions": [{"tweak": 1}]})] {
            assert!(matches!(checked_rule("sender", "@a:x", &body(bad)), Err(RuleError::Invalid(_))));
        }
        let conditions = json!({"actions": [], "conditions": [{"key": "type"}]});
        assert!(matches!(checked_rule("override", "x", &body(conditions)), Err(RuleError::Invalid(_))));
        let fine = json!({"actions": [{"set_tweak": "sound", "value": "x"}], "conditions": [{"kind": "event_match"}]});
        assert!(checked_rule("underride", "x", &body(fine)).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(members: u64, power: i64) -> PushContext<'static> {
        PushContext {
            user_id: "@alice:hub.test",
            display_name: Some("Alice Smith"),
            member_count: members,
            sender_power: power,
            room_notification_power: 50,
        }
    }

    fn rules() -> Value {
        let user = crate::core::ids::UserId::parse("@alice:hub.test").unwrap();
        default_rules(&user)["global"].clone()
    }

    fn message(body: &str, extra: Value) -> Value {
        let mut e = json!({"type": "m.room.message", "sender": "@bob:p1.test", "room_id": "!r:hub.test",
                           "content": {"msgtype": "m.text", "body": body}});
        if let (Some(c), Some(x)) = (e["content"].as_object_mut(), extra.as_object()) {
            c.extend(x.clone());
        }
        e
    }

    #[test]
    fn defaults_notify_messages_and_highlight_mentions() {
        let r = rules();
        let plain = evaluate(&r, &message("hello", json!({})), &ctx(3, 0));
        assert_eq!((plain.notify, plain.highlight), (true, false));
        let one_to_one = evaluate(&r, &message("hello", json!({})), &ctx(2, 0));
        assert_eq!(one_to_one.sound.as_deref(), Some("default"));
        let mention = message("hi", json!({"m.mentions": {"user_ids": ["@alice:hub.test"]}}));
        assert!(evaluate(&r, &mention, &ctx(3, 0)).highlight);
        let room = message("all", json!({"m.mentions": {"room": true}}));
        assert!(!evaluate(&r, &room, &ctx(3, 0)).highlight, "a sender without the power");
        assert!(evaluate(&r, &room, &ctx(3, 50)).highlight, "a sender with it");
        let notice = json!({"type": "m.room.message", "sender": "@bob:p1.test", "content": {"msgtype": "m.notice", "body": "x"}});
        assert!(!evaluate(&r, &notice, &ctx(3, 0)).notify);
        let edit = message("* fixed", json!({"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}));
        assert!(!evaluate(&r, &edit, &ctx(3, 0)).notify, "edits do not notify again");
        let reaction = json!({"type": "m.reaction", "sender": "@bob:p1.test", "content": {}});
        assert!(!evaluate(&r, &reaction, &ctx(3, 0)).notify);
    }

    #[test]
    fn user_rules_come_first_and_can_be_disabled() {
        let mut r = rules();
        r["content"] = json!([{"rule_id": "cats", "pattern": "cat*", "enabled": true,
                               "actions": ["notify", {"set_tweak": "highlight"}]}]);
        assert!(evaluate(&r, &message("I like Catnip.", json!({})), &ctx(3, 0)).highlight);
        assert!(!evaluate(&r, &message("concatenate", json!({})), &ctx(3, 0)).highlight, "words only");
        r["room"] = json!([{"rule_id": "!r:hub.test", "enabled": true, "actions": []}]);
        assert!(!evaluate(&r, &message("hello", json!({})), &ctx(3, 0)).notify, "a muted room");
        r["room"][0]["enabled"] = json!(false);
        assert!(evaluate(&r, &message("hello", json!({})), &ctx(3, 0)).notify);
        r["override"][0]["enabled"] = json!(true);
        assert!(!evaluate(&r, &message("hello", json!({})), &ctx(3, 0)).notify, "the master rule");
    }

    #[test]
    fn conditions_read_escaped_keys_counts_and_names() {
        let e = json!({"content": {"m.relates_to": {"rel_type": "m.thread"}, "body": "Hey alice smith!"}});
        assert_eq!(lookup(&e, "content.m\\.relates_to.rel_type"), Some(&json!("m.thread")));
        assert_eq!(lookup(&e, "content.m.relates_to"), None);
        assert!(member_count(">=2", 2) && member_count("2", 2) && !member_count("<2", 2) && !member_count("x", 2));
        let c = json!({"kind": "contains_display_name"});
        assert!(condition(&c, &e, &ctx(3, 0)));
        let e = json!({"content": {"body": "alice smithers"}});
        assert!(!condition(&c, &e, &ctx(3, 0)));
        assert!(glob("m.room.*", "m.room.message") && !glob("m.room.?", "m.room.xy"));
        assert!(!condition(&json!({"kind": "unknown_kind"}), &e, &ctx(3, 0)), "unknown conditions never match");
    }
}
