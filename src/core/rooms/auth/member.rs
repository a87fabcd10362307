//! `m.room.member` rules: LM rule 5 (items 83-92), Matrix v10/v11 rule 4.

use serde_json::Value;

use super::power::{creator_of, PowerLevels};
use super::{third_party, AuthError, Rule};
use crate::core::event::{Pdu, RoomVersion};
use crate::core::rooms::state::StateView;

fn reject(lm: &'static str, mx: &'static str, msg: impl Into<String>) -> Result<(), AuthError> {
    Err(AuthError::new(Rule::new(lm, mx), msg))
}

pub fn check_member(event: &Pdu, state: &impl StateView, version: &'static RoomVersion) -> Result<(), AuthError> {
    let (Some(target), Some(membership)) = (event.state_key(), event.membership()) else {
        return reject("5.1", "4.1", "member event needs a state_key and content.membership");
    };
    let pl = PowerLevels::from_state(state, version);
    let ctx = Ctx { event, state, version, pl, sender: event.sender().as_str(), target };
    match membership {
        "join" => ctx.join(),
        "invite" => ctx.invite(),
        "leave" => ctx.leave(),
        "ban" => ctx.ban(),
        "knock" if version.auth.knocking => ctx.knock(),
        other => reject("5.7", "4.8", format!("unknown membership {other:?}")),
    }
}

struct Ctx<'a, S> {
    event: &'a Pdu,
    state: &'a S,
    version: &'static RoomVersion,
    pl: PowerLevels<'a>,
    sender: &'a str,
    target: &'a str,
}

impl<S: StateView> Ctx<'_, S> {
    fn lm(&self) -> bool {
        self.version.auth.lm
    }

    fn sender_membership(&self) -> &str {
        self.state.membership(self.sender)
    }

    fn target_membership(&self) -> &str {
        self.state.membership(self.target)
    }

    fn join(&self) -> Result<(), AuthError> {
        // 5.2.1: the creator's join directly after the create event.
        if let Some(create) = self.state.create() {
            let after_create = self.event.prev_events() == [create.event_id().clone()];
            if after_create && creator_of(create, self.version).as_deref() == Some(self.target) {
                return Ok(());
            }
        }
        if self.sender != self.target {
            return reject("5.2.2", "4.3.2", "a join must be sent by the joining user");
        }
        let current = self.target_membership();
        if current == "ban" {
            return reject("5.2.3", "4.3.3", "the user is banned");
        }
        let rule = self.state.join_rule();
        let auth = self.version.auth;
        let invited_or_joined = current == "invite" || current == "join";
        match rule {
            "invite" => self.allow_if(invited_or_joined, ("5.2.4", "4.3.4"), "the room is invite-only"),
            "knock" if auth.knocking => {
                self.allow_if(invited_or_joined, ("5.2.4", "4.3.4"), "the room requires an invite (knock to ask)")
            }
            "restricted" if auth.restricted => self.restricted_join(invited_or_joined),
            "knock_restricted" if auth.knock_restricted => self.restricted_join(invited_or_joined),
            "public" => Ok(()),
            other => reject("5.2.6", "4.3.7", format!("join rule {other:?} does not allow joining")),
        }
    }

    fn allow_if(&self, ok: bool, rule: (&'static str, &'static str), msg: &str) -> Result<(), AuthError> {
        if ok {
            Ok(())
        } else {
            reject(rule.0, rule.1, format!("{msg}, and the user is not invited"))
        }
    }

    /// Matrix 4.3.5 (not in LM: OQ-9).
    fn restricted_join(&self, invited_or_joined: bool) -> Result<(), AuthError> {
        if invited_or_joined {
            return Ok(());
        }
        let via = self.event.content().get("join_authorised_via_users_server").and_then(Value::as_str);
        let Some(via) = via else {
            return reject("5.2.6", "4.3.5.2", "restricted join without join_authorised_via_users_server");
        };
        if self.state.membership(via) != "join" {
            return reject("5.2.6", "4.3.5.2", "the authorising user is not joined");
        }
        if self.pl.user_level(via) < self.pl.action_level("invite") {
            return reject("5.2.6", "4.3.5.2", "the authorising user may not invite");
        }
        Ok(())
    }

    fn invite(&self) -> Result<(), AuthError> {
        if !self.lm() {
            if let Some(tpi) = self.event.content().get("third_party_invite") {
                if self.target_membership() == "ban" {
                    return reject("5.3.2", "4.4.1.1", "the target is banned");
                }
                return third_party::check(self.event, tpi, self.state, self.target);
            }
        }
        if self.sender_membership() != "join" {
            return reject("5.3.1", "4.4.2", "the inviter is not joined");
        }
        match self.target_membership() {
            "join" => return reject("5.3.2", "4.4.3", "the target is already joined"),
            "ban" => return reject("5.3.2", "4.4.3", "the target is banned"),
            _ => {}
        }
        let (have, need) = (self.pl.user_level(self.sender), self.pl.action_level("invite"));
        if have >= need {
            Ok(())
        } else {
            reject("5.3.4", "4.4.5", format!("inviter level {have} is below the invite level {need}"))
        }
    }

    fn leave(&self) -> Result<(), AuthError> {
        if self.sender == self.target {
            let current = self.target_membership();
            let knock_counts = self.version.auth.knocking && current == "knock";
            return if current == "join" || current == "invite" || knock_counts {
                Ok(())
            } else {
                reject("5.4.1", "4.5.1", format!("cannot leave from membership {current:?}"))
            };
        }
        if self.sender_membership() != "join" {
            return reject("5.4.2", "4.5.2", "the sender is not joined");
        }
        let sender_level = self.pl.user_level(self.sender);
        if self.target_membership() == "ban" && sender_level < self.pl.action_level("ban") {
            return reject("5.4.3", "4.5.3", "unbanning needs the ban level");
        }
        let target_level = self.pl.user_level(self.target);
        if sender_level >= self.pl.action_level("kick") && target_level < sender_level {
            Ok(())
        } else {
            reject("5.4.5", "4.5.5", format!("kick needs the kick level and a target below {sender_level}"))
        }
    }

    fn ban(&self) -> Result<(), AuthError> {
        if self.sender_membership() != "join" {
            return reject("5.5.1", "4.6.1", "the sender is not joined");
        }
        let sender_level = self.pl.user_level(self.sender);
        let target_level = self.pl.user_level(self.target);
        if sender_level >= self.pl.action_level("ban") && target_level < sender_level {
            Ok(())
        } else {
            reject("5.5.3", "4.6.3", format!("ban needs the ban level and a target below {sender_level}"))
        }
    }

    fn knock(&self) -> Result<(), AuthError> {
        let rule = self.state.join_rule();
        let rule_ok = rule == "knock" || (self.version.auth.knock_restricted && rule == "knock_restricted");
        if !rule_ok {
            return reject("5.6.1", "4.7.1", format!("join rule {rule:?} does not allow knocking"));
        }
        if self.sender != self.target {
            return reject("5.6.2", "4.7.2", "a knock must be sent by the knocking user");
        }
        let current = self.sender_membership();
        // The draft lets an invited user knock (5.6.3); Matrix does not.
        let blocked = current == "ban" || current == "join" || (!self.lm() && current == "invite");
        if blocked {
            reject("5.6.4", "4.7.4", format!("cannot knock from membership {current:?}"))
        } else {
            Ok(())
        }
    }
}
