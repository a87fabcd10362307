//! Changes to an account: the password, deactivation, and third-party
//! identifiers (none are kept: the lists are empty, adding one is refused).

use serde_json::{json, Value};

use super::Call;
use crate::e2ee::DeviceChange;
use crate::store::{Batch, Op};
use crate::wire::client::PasswordChange;
use crate::wire::{self, Failure};

/// `POST account/password`: with the current password (user-interactive
/// auth); other devices are logged out unless `logout_devices` is false.
pub async fn password(call: Call) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let (user, device) = (user.clone(), device.to_owned());
    super::devices::require_password(&call, &user).await?;
    let PasswordChange { new_password, logout_devices } = wire::read(call.body()?)?;
    let new_password = new_password.ok_or_else(|| Failure::MissingParam("new_password is required".into()))?;
    super::account::check_password(&call.server, new_password)?;
    let hash = call.accounts.passwords.hash(new_password).await?;
    let mut rec = call.server.store.user(&user)?.ok_or(Failure::UnknownToken)?;
    rec.password_hash = hash;
    let mut b = Batch::new();
    b.push(Op::PutUser(rec));
    let mut gone = Vec::new();
    if logout_devices.unwrap_or(true) {
        for (other, _) in call.server.store.devices(&user)? {
            if other != device {
                super::devices::delete_ops(&call, &user, &other, &mut b)?;
                gone.push(other);
            }
        }
    }
    let changes: Vec<_> = gone.iter().map(|d| (d.as_str(), DeviceChange::Deleted)).collect();
    super::keys::commit_device_changes(&call, &user, &changes, b).await?;
    Ok(json!({}))
}

/// `POST account/deactivate`: with the password; the account keeps its
/// name but loses its password, profile, devices and sessions, and leaves
/// (or declines) every room.
pub async fn deactivate(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    super::devices::require_password(&call, &user).await?;
    deactivate_account(call, &user).await?;
    Ok(json!({"id_server_unbind_result": "no-support"}))
}

/// Deactivates `user`, the caller of `call` (or an admin acting as them).
pub(super) async fn deactivate_account(call: Call, user: &crate::core::ids::UserId) -> Result<(), Failure> {
    let user = user.clone();
    let mut rec = call.server.store.user(&user)?.ok_or(Failure::UnknownToken)?;
    rec.deactivated = true;
    rec.password_hash = String::new();
    rec.displayname = String::new();
    rec.avatar_url = String::new();
    // Rooms first, while the account can still act in them.
    for (room, m) in call.server.store.memberships(&user)? {
        if matches!(m.membership.as_str(), "join" | "invite" | "knock") {
            if let Err(e) = super::membership::leave(call.clone(), room.as_str()).await {
                tracing::info!(%user, %room, error = %e, "a deactivated user could not leave a room");
            }
        }
    }
    let mut b = Batch::new();
    b.push(Op::PutUser(rec));
    let devices: Vec<String> = call.server.store.devices(&user)?.into_iter().map(|(d, _)| d).collect();
    for device in &devices {
        super::devices::delete_ops(&call, &user, device, &mut b)?;
    }
    let changes: Vec<_> = devices.iter().map(|d| (d.as_str(), DeviceChange::Deleted)).collect();
    super::keys::commit_device_changes(&call, &user, &changes, b).await?;
    Ok(())
}

/// `GET account/3pid`: none are kept.
pub fn threepids(call: Call) -> Result<Value, Failure> {
    call.who()?;
    Ok(json!({"threepids": []}))
}

/// `POST account/3pid/{delete,unbind}`: nothing to remove.
pub fn threepid_removed(call: Call) -> Result<Value, Failure> {
    call.who()?;
    Ok(json!({"id_server_unbind_result": "no-support"}))
}
