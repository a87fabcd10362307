//! The end-to-end encryption scenario, driven by matrix-rust-sdk (0.18, with
//! its in-memory stores and vodozemac): alice on the hub and bob on the
//! follower make a megolm room, each decrypts what the other sends, alice
//! logs in a second device that decrypts bob's next message (keys upload,
//! query and claim, room keys over to-device, device_lists changes), a
//! custom to-device message from bob reaches alice's first device exactly
//! once even when sent twice with one transaction id, and cross-signing:
//! alice signs her second device with her self-signing key, bob sees it,
//! signs alice's master key with his user-signing key and then holds her
//! identity and her second device verified; then alice resets her
//! cross-signing keys, which the server accepts only with her password
//! (user-interactive auth), and bob sees her identity change; bob resets
//! his, and a wrong password is refused in a way that lets him try again.
//!
//! The same scenario as tests/clients/js/e2ee.mjs (less its blocked-device
//! and key-backup parts), run by tests/real_clients.rs.
//!
//! Environment: LMX_HUB_URL, LMX_FOLLOWER_URL (may be the same server),
//! LMX_NAME_SUFFIX, and LMX_DEBUG=1 for the SDK's logs on stderr (RUST_LOG
//! overrides their filter). LMX_PAUSE is not supported: stopping a client
//! drops its in-memory crypto store, so the binary exits non-zero if it is
//! 1. Prints progress lines on stdout and then OK; on failure, exits 1
//! with the reason (and what the clients saw) on stderr.

#![recursion_limit = "256"]

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use matrix_sdk::{
    Client, Room, RoomState,
    config::SyncSettings,
    deserialized_responses::{AlgorithmInfo, EncryptionInfo, TimelineEventKind},
    encryption::CrossSigningResetAuthType,
    event_handler::RawEvent,
    ruma::{
        DeviceId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, TransactionId, UserId,
        api::client::{
            room::{Visibility, create_room},
            to_device::send_event_to_device,
            uiaa,
        },
        api::error::ErrorKind,
        events::{
            AnyToDeviceEvent, AnyToDeviceEventContent, InitialStateEvent, ToDeviceEventType,
            room::{
                encrypted::OriginalSyncRoomEncryptedEvent,
                encryption::RoomEncryptionEventContent,
                member::MembershipState,
                message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
            },
        },
        serde::Raw,
        to_device::DeviceIdOrAllDevices,
    },
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const PASSWORD: &str = "correct horse battery";
const MEGOLM: &str = "m.megolm.v1.aes-sha2";
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const PING: &str = "org.example.ping";

/// A progress line on stdout, the protocol with tests/real_clients.rs.
macro_rules! say {
    ($($arg:tt)*) => { println!($($arg)*) };
}

/// An `m.room.message` as a client received it.
#[derive(Clone, Debug)]
struct Message {
    room: OwnedRoomId,
    event_id: OwnedEventId,
    sender: OwnedUserId,
    body: String,
    /// The algorithm it was encrypted with, `None` if it came in clear.
    algorithm: Option<String>,
    /// Decrypted only on a retry, after the sync that brought it.
    retried: bool,
}

/// An `m.room.encrypted` event the client could not decrypt when it came.
#[derive(Clone, Debug)]
struct Undecrypted {
    room: OwnedRoomId,
    event_id: OwnedEventId,
    sender: OwnedUserId,
    session_id: Option<String>,
}

/// What one device's client received through its sync loop.
#[derive(Default)]
struct Seen {
    messages: Vec<Message>,
    undecrypted: Vec<Undecrypted>,
    /// (type, sender, content) of each to-device event, decrypted ones
    /// as they were inside their olm envelope.
    to_device: Vec<(String, OwnedUserId, Value)>,
    sync_errors: Vec<String>,
    syncs: usize,
}

/// A logged-in device with its sync loop running.
struct Device {
    client: Client,
    user_id: OwnedUserId,
    tag: String,
    seen: Arc<Mutex<Seen>>,
    sync: JoinHandle<()>,
}

fn algorithm_of(info: &EncryptionInfo) -> String {
    match &info.algorithm_info {
        AlgorithmInfo::MegolmV1AesSha2 { .. } => MEGOLM.to_owned(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

impl Device {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    fn room(&self, room: &RoomId) -> Option<Room> {
        self.client.get_room(room)
    }

    /// The message `body` as this client decrypted it: sent encrypted with
    /// megolm, decrypted without error.
    fn decrypted(&self, room: &RoomId, body: &str) -> Option<Message> {
        self.seen()
            .messages
            .iter()
            .find(|m| m.room == room && m.body == body && m.algorithm.as_deref() == Some(MEGOLM))
            .cloned()
    }

    /// The messages of a room as this client saw them, for failure messages.
    fn timeline(&self, room: &RoomId) -> String {
        let seen = self.seen();
        let mut out = vec![format!("{} in {room}:", self.tag)];
        for m in seen.messages.iter().filter(|m| m.room == room) {
            let state = match (&m.algorithm, m.retried) {
                (None, _) => "plaintext".to_owned(),
                (Some(a), false) => format!("decrypted, {a}"),
                (Some(a), true) => format!("decrypted on a retry, {a}"),
            };
            out.push(format!("  {} {} m.room.message {:?} [{state}]", m.event_id, m.sender, m.body));
        }
        for u in seen.undecrypted.iter().filter(|u| u.room == room) {
            out.push(format!(
                "  {} {} m.room.encrypted [not decrypted, session {}]",
                u.event_id,
                u.sender,
                u.session_id.as_deref().unwrap_or("?")
            ));
        }
        if out.len() == 1 {
            out.push("  (no messages)".to_owned());
        }
        drop(seen);
        out.push(self.received());
        out.join("\n")
    }

    /// What this client received besides room events, for failure messages.
    fn received(&self) -> String {
        let seen = self.seen();
        let mut out = Vec::new();
        if !seen.to_device.is_empty() {
            out.push("to-device events:".to_owned());
            for (ty, sender, _) in &seen.to_device {
                out.push(format!("  {ty} from {sender}"));
            }
        }
        if !seen.sync_errors.is_empty() {
            out.push("sync errors:".to_owned());
            out.extend(seen.sync_errors.iter().map(|e| format!("  {e}")));
        }
        out.push(format!("({} syncs)", seen.syncs));
        out.join("\n")
    }

    /// Asks the server again for the events this client could not decrypt
    /// when they came, and decrypts them with the keys it holds now, as a
    /// client's timeline does once a late room key arrives.
    async fn retry_undecrypted(&self, room_id: &RoomId) {
        let Some(room) = self.room(room_id) else { return };
        let pending: Vec<OwnedEventId> = {
            let seen = self.seen();
            seen.undecrypted
                .iter()
                .filter(|u| u.room == room_id)
                .filter(|u| !seen.messages.iter().any(|m| m.event_id == u.event_id))
                .map(|u| u.event_id.clone())
                .collect()
        };
        for event_id in pending {
            let Ok(event) = room.event(&event_id, None).await else { continue };
            let TimelineEventKind::Decrypted(decrypted) = &event.kind else { continue };
            let Ok(json) = decrypted.event.deserialize_as_unchecked::<Value>() else { continue };
            if json["type"] != "m.room.message" {
                continue;
            }
            let message = Message {
                room: room_id.to_owned(),
                event_id: event_id.clone(),
                sender: event.sender().unwrap_or_else(|| self.user_id.clone()),
                body: json["content"]["body"].as_str().unwrap_or_default().to_owned(),
                algorithm: Some(algorithm_of(&decrypted.encryption_info)),
                retried: true,
            };
            self.seen().messages.push(message);
        }
    }
}

/// Polls `pred` until it holds; on timeout the error carries `detail()`,
/// what the clients saw instead, and the last error `pred` returned.
async fn until(
    what: &str,
    mut pred: impl AsyncFnMut() -> Result<bool>,
    detail: impl AsyncFnOnce() -> String,
) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut last_error = None;
    loop {
        match pred().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(format!("{e:#}")),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let mut seen = detail().await;
    if let Some(e) = last_error {
        seen.push_str(&format!("\nlast error while polling: {e}"));
    }
    let seen = seen.trim_end();
    if seen.is_empty() {
        bail!("never saw {what} within {} s", WAIT.as_secs())
    }
    bail!("never saw {what} within {} s; saw:\n{seen}", WAIT.as_secs())
}

async fn nothing() -> String {
    String::new()
}

/// Registers `name` with a dummy auth stage and no device: each device of
/// the scenario logs in with a fixed id and uploads its own keys.
async fn register(base_url: &str, name: &str) -> Result<()> {
    common::register(base_url, name, PASSWORD).await
}

/// Logs in `name` as `device_id`, registers the event handlers that record
/// what it receives, and starts its sync loop; returns after a first sync.
async fn device(base_url: &str, name: &str, device_id: &str) -> Result<Device> {
    let client = Client::builder().homeserver_url(base_url).build().await?;
    let login = client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .device_id(device_id)
        .initial_device_display_name(&format!("e2ee {device_id}"))
        .await
        .with_context(|| format!("logging {name} in as {device_id} at {base_url}"))?;
    ensure!(login.device_id == device_id, "login keeps the requested device id {device_id} (got {})", login.device_id);
    let user_id = login.user_id.clone();
    let tag = format!("{user_id}/{device_id}");
    let seen = Arc::new(Mutex::new(Seen::default()));

    // Fires for every m.room.message, with the encryption info of the
    // m.room.encrypted event it was decrypted from (None if in clear).
    let s = seen.clone();
    client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room, info: Option<EncryptionInfo>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().messages.push(Message {
                room: room.room_id().to_owned(),
                event_id: ev.event_id.clone(),
                sender: ev.sender.clone(),
                body: ev.content.body().to_owned(),
                algorithm: info.as_ref().map(algorithm_of),
                retried: false,
            });
        }
    });
    // Fires only for what could not be decrypted: a decrypted event is
    // handed to the handlers of its cleartext type instead.
    let s = seen.clone();
    client.add_event_handler(move |ev: OriginalSyncRoomEncryptedEvent, room: Room| {
        let s = s.clone();
        async move {
            let session_id =
                serde_json::to_value(&ev.content).ok().and_then(|c| c["session_id"].as_str().map(str::to_owned));
            s.lock().unwrap().undecrypted.push(Undecrypted {
                room: room.room_id().to_owned(),
                event_id: ev.event_id.clone(),
                sender: ev.sender.clone(),
                session_id,
            });
        }
    });
    let s = seen.clone();
    client.add_event_handler(move |ev: AnyToDeviceEvent, raw: RawEvent| {
        let s = s.clone();
        async move {
            let content = serde_json::from_str::<Value>(raw.get()).map(|v| v["content"].clone()).unwrap_or(Value::Null);
            s.lock().unwrap().to_device.push((ev.event_type().to_string(), ev.sender().to_owned(), content));
        }
    });

    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let sync = {
        let client = client.clone();
        let seen = seen.clone();
        let first = Mutex::new(Some(first_tx));
        tokio::spawn(async move {
            let settings = SyncSettings::default().timeout(Duration::from_secs(10));
            let result = client
                .sync_with_result_callback(settings, |response| {
                    let seen = seen.clone();
                    let first = first.lock().unwrap().take();
                    async move {
                        match response {
                            Ok(_) => {
                                seen.lock().unwrap().syncs += 1;
                                if let Some(tx) = first {
                                    let _ = tx.send(());
                                }
                            }
                            Err(e) => seen.lock().unwrap().sync_errors.push(format!("{e:#}")),
                        }
                        Ok(matrix_sdk::LoopCtrl::Continue)
                    }
                })
                .await;
            if let Err(e) = result {
                seen.lock().unwrap().sync_errors.push(format!("sync loop ended: {e:#}"));
            }
        })
    };
    let d = Device { client, user_id, tag, seen, sync };
    if !matches!(tokio::time::timeout(WAIT, first_rx).await, Ok(Ok(()))) {
        bail!("{} had no successful sync within {} s:\n{}", d.tag, WAIT.as_secs(), d.received());
    }
    Ok(d)
}

/// The device ids of `user` that `d`'s crypto store holds.
async fn device_ids(d: &Device, user: &UserId) -> Result<Vec<OwnedDeviceId>> {
    let devices = d.client.encryption().get_user_devices(user).await?;
    Ok(devices.keys().map(ToOwned::to_owned).collect())
}

/// Waits until `d`'s crypto knows `device_id` of `user`. With `query`, it
/// asks the server (keys/query) on each poll, as a client does for a user
/// it does not track yet; without, it only reads its store, which learns
/// of a tracked user's new device through device_lists.changed.
async fn knows_device(d: &Device, user: &UserId, device_id: &str, query: bool) -> Result<()> {
    until(
        &format!("{} know {user}'s device {device_id}", d.tag),
        async || {
            if query {
                d.client.encryption().request_user_identity(user).await?;
            }
            Ok(device_ids(d, user).await?.iter().any(|id| id.as_str() == device_id))
        },
        async || match device_ids(d, user).await {
            Ok(ids) => format!("  devices: {ids:?}"),
            Err(e) => format!("  devices: error {e:#}"),
        },
    )
    .await
}

async fn wait_decrypted(d: &Device, room: &RoomId, body: &str) -> Result<Message> {
    let mut last_retry = Instant::now();
    until(
        &format!("{} decrypt {body:?}", d.tag),
        async || {
            if d.decrypted(room, body).is_some() {
                return Ok(true);
            }
            if last_retry.elapsed() > Duration::from_secs(2) {
                last_retry = Instant::now();
                d.retry_undecrypted(room).await;
            }
            Ok(d.decrypted(room, body).is_some())
        },
        async || d.timeline(room),
    )
    .await?;
    Ok(d.decrypted(room, body).unwrap())
}

fn how(m: &Message) -> &'static str {
    if m.retried { " (on a retry, its key came after the event)" } else { "" }
}

async fn joined(d: &Device, room: &RoomId, user: &UserId) -> Result<bool> {
    let Some(room) = d.room(room) else { return Ok(false) };
    let member = room.get_member_no_sync(user).await?;
    Ok(member.is_some_and(|m| *m.membership() == MembershipState::Join))
}

/// Whether `d` holds the room as encrypted with megolm, from its state.
fn encrypted(d: &Device, room: &RoomId) -> bool {
    d.room(room).is_some_and(|r| {
        r.encryption_state().is_encrypted()
            && r.encryption_settings().is_some_and(|c| c.algorithm.as_ref().map(|a| a.as_str()) == Some(MEGOLM))
    })
}

async fn send(d: &Device, room: &RoomId, body: &str) -> Result<()> {
    let r = d.room(room).ok_or_else(|| anyhow!("{} does not know {room}", d.tag))?;
    let sent = r
        .send(RoomMessageEventContent::text_plain(body))
        .await
        .with_context(|| format!("{} sending {body:?}", d.tag))?;
    let algorithm = sent.encryption_info.as_ref().map(algorithm_of);
    ensure!(
        algorithm.as_deref() == Some(MEGOLM),
        "{} sent {body:?} ({}) encrypted with megolm, not {algorithm:?}",
        d.tag,
        sent.response.event_id
    );
    Ok(())
}

/// Answers the user-interactive authentication of an endpoint that
/// requires it (keys/device_signing/upload) with `name`'s password: the
/// first request goes without auth and gets the session to answer.
async fn bootstrap_cross_signing(d: &Device, name: &str) -> Result<&'static str> {
    let encryption = d.client.encryption();
    match encryption.bootstrap_cross_signing(None).await {
        Ok(()) => Ok("without user-interactive auth"),
        Err(e) => {
            let Some(uiaa_info) = e.as_uiaa_response() else {
                return Err(e).context(format!("{} bootstrapping cross-signing", d.tag));
            };
            encryption
                .bootstrap_cross_signing(Some(password_auth(name, PASSWORD, uiaa_info.session.clone())))
                .await
                .with_context(|| {
                    format!("{} bootstrapping cross-signing with a password (flows {:?})", d.tag, uiaa_info.flows)
                })?;
            Ok("with a password")
        }
    }
}

/// `user`'s master key as `d`'s crypto store holds it.
async fn master_key_of(d: &Device, user: &UserId) -> Result<Option<String>> {
    let identity = d.client.encryption().get_user_identity(user).await?;
    Ok(identity.and_then(|i| i.master_key().get_first_key().map(|k| k.to_base64())))
}

/// A device's cross-signing status as `d` sees it, for failure messages.
async fn device_status(d: &Device, user: &UserId, device_id: &str) -> String {
    match d.client.encryption().get_device(user, <&DeviceId>::from(device_id)).await {
        Ok(Some(dev)) => format!(
            "  {user}/{device_id}: cross_signed_by_owner={} verified_with_cross_signing={} verified={}",
            dev.is_cross_signed_by_owner(),
            dev.is_verified_with_cross_signing(),
            dev.is_verified()
        ),
        Ok(None) => format!("  {user}/{device_id}: unknown to {}", d.tag),
        Err(e) => format!("  {user}/{device_id}: error {e:#}"),
    }
}

async fn cross_signed_by_owner(d: &Device, user: &UserId, device_id: &str) -> Result<bool> {
    let dev = d.client.encryption().get_device(user, <&DeviceId>::from(device_id)).await?;
    Ok(dev.is_some_and(|dev| dev.is_cross_signed_by_owner()))
}

/// Cross-signing: alice's first device makes her master, self-signing and
/// user-signing keys and signs her second device with the self-signing key;
/// bob, on the other server, sees the signature once alice's device list
/// changes. Bob makes his own keys, sees alice's master key, and signs it
/// with his user-signing key (keys/signatures/upload), after which his
/// client holds alice's identity verified.
async fn cross_signing(
    alice: &Device,
    alice2: &Device,
    bob: &Device,
    alice_name: &str,
    bob_name: &str,
) -> Result<String> {
    let alice_id = &alice.user_id;
    let bob_id = &bob.user_id;
    let how = bootstrap_cross_signing(alice, alice_name).await?;
    let status = alice.client.encryption().cross_signing_status().await;
    ensure!(
        status.as_ref().is_some_and(|s| s.is_complete()),
        "{} holds all three cross-signing keys after bootstrapping: {status:?}",
        alice.tag
    );
    let alice_master = master_key_of(alice, alice_id)
        .await?
        .ok_or_else(|| anyhow!("{} has a master key after bootstrapping", alice.tag))?;
    say!("{} bootstrapped cross-signing ({how})", alice.tag);

    knows_device(alice, alice_id, "ALICE2", false).await?;
    let dev = alice
        .client
        .encryption()
        .get_device(alice_id, "ALICE2".into())
        .await?
        .ok_or_else(|| anyhow!("{} knows ALICE2", alice.tag))?;
    dev.verify().await.with_context(|| format!("{} signing ALICE2", alice.tag))?;

    // Bob tracks alice (they share a room): his client queries her keys
    // again when she appears in his sync's device_lists.changed.
    until(
        &format!("{} see ALICE2 signed by alice's self-signing key", bob.tag),
        async || {
            Ok(master_key_of(bob, alice_id).await?.as_deref() == Some(alice_master.as_str())
                && cross_signed_by_owner(bob, alice_id, "ALICE2").await?)
        },
        async || {
            format!(
                "  alice's master key: {}, expected {alice_master}\n{}",
                master_key_of(bob, alice_id).await.ok().flatten().unwrap_or_else(|| "(none)".into()),
                device_status(bob, alice_id, "ALICE2").await
            )
        },
    )
    .await?;
    until(
        &format!("{} see itself signed by its owner", alice2.tag),
        async || cross_signed_by_owner(alice2, alice_id, "ALICE2").await,
        async || device_status(alice2, alice_id, "ALICE2").await,
    )
    .await?;
    let identity = bob
        .client
        .encryption()
        .get_user_identity(alice_id)
        .await?
        .ok_or_else(|| anyhow!("{} holds alice's identity", bob.tag))?;
    ensure!(!identity.is_verified(), "{} does not yet hold alice verified", bob.tag);
    say!("{} sees ALICE2 cross-signed by alice's master key {alice_master}", bob.tag);

    let how = bootstrap_cross_signing(bob, bob_name).await?;
    let bob_master =
        master_key_of(bob, bob_id).await?.ok_or_else(|| anyhow!("{} has a master key after bootstrapping", bob.tag))?;
    say!("{} bootstrapped cross-signing ({how})", bob.tag);
    until(
        &format!("{} see bob's master key", alice.tag),
        async || Ok(master_key_of(alice, bob_id).await?.as_deref() == Some(bob_master.as_str())),
        async || {
            format!(
                "  bob's master key: {}, expected {bob_master}",
                master_key_of(alice, bob_id).await.ok().flatten().unwrap_or_else(|| "(none)".into())
            )
        },
    )
    .await?;
    identity.verify().await.with_context(|| format!("{} signing alice's master key", bob.tag))?;
    // The signature is only trusted once bob's client reads it back from
    // keys/query, which it does when the server lists alice in his
    // device_lists.changed.
    let verified = async || -> Result<bool> {
        let identity = bob.client.encryption().get_user_identity(alice_id).await?;
        Ok(identity.is_some_and(|i| i.is_verified()))
    };
    until(&format!("{} hold alice's identity verified", bob.tag), verified, async || {
        match bob.client.encryption().get_user_identity(alice_id).await {
            Ok(Some(i)) => format!(
                "  verified={} was_previously_verified={} master={:?}",
                i.is_verified(),
                i.was_previously_verified(),
                i.master_key().get_first_key().map(|k| k.to_base64())
            ),
            Ok(None) => "  no identity".into(),
            Err(e) => format!("  error {e:#}"),
        }
    })
    .await?;
    until(
        &format!("{} hold ALICE2 verified through cross-signing", bob.tag),
        async || {
            let dev = bob.client.encryption().get_device(alice_id, "ALICE2".into()).await?;
            Ok(dev.is_some_and(|d| d.is_verified_with_cross_signing()))
        },
        async || device_status(bob, alice_id, "ALICE2").await,
    )
    .await?;
    say!("{} signed alice's master key and holds her identity and ALICE2 verified", bob.tag);
    Ok(alice_master)
}

fn password_auth(name: &str, password: &str, session: Option<String>) -> uiaa::AuthData {
    let mut auth = uiaa::Password::new(
        uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(name.to_owned())),
        password.to_owned(),
    );
    auth.session = session;
    uiaa::AuthData::Password(auth)
}

/// Resets `d`'s cross-signing keys: new keys replace those the server
/// holds, which it must accept only after user-interactive auth
/// (keys/device_signing/upload, spec v1.11, MSC3967). With `wrong_first`,
/// a wrong password goes first, which the server must refuse with a 401
/// that carries the auth info and errcode M_FORBIDDEN, so that the right
/// password can follow in the same session. Returns the new master key
/// once `d` and `observer` both hold it.
async fn reset_cross_signing(d: &Device, name: &str, observer: &Device, wrong_first: bool) -> Result<String> {
    let user_id = &d.user_id;
    let old_master =
        master_key_of(d, user_id).await?.ok_or_else(|| anyhow!("{} has a master key before the reset", d.tag))?;
    let handle =
        d.client.encryption().reset_cross_signing().await.context("resetting cross-signing")?.ok_or_else(|| {
            anyhow!(
                "the server replaced {user_id}'s cross-signing keys without user-interactive auth \
             (POST keys/device_signing/upload with new keys and no `auth` answered 200, not 401)"
            )
        })?;
    let CrossSigningResetAuthType::Uiaa(info) = handle.auth_type() else {
        bail!("resetting cross-signing asks for OAuth, not user-interactive auth")
    };
    ensure!(
        info.flows.iter().any(|f| f.stages == [uiaa::AuthType::Password]),
        "keys/device_signing/upload offers a flow of just m.login.password: {:?}",
        info.flows
    );
    if wrong_first {
        match handle.auth(Some(password_auth(name, "not the password", info.session.clone()))).await {
            Ok(()) => bail!("keys/device_signing/upload accepted a wrong password"),
            Err(e) => {
                let auth_error = e.as_uiaa_response().and_then(|i| i.auth_error.as_ref());
                ensure!(
                    auth_error.is_some_and(|err| matches!(err.kind, ErrorKind::Forbidden)),
                    "a wrong password in the user-interactive auth of keys/device_signing/upload \
                     must get 401 with the auth info (flows, session) and errcode M_FORBIDDEN, \
                     so that the client may try again (spec: User-Interactive Authentication API); \
                     the server answered: {e:#}"
                );
            }
        }
    }
    handle
        .auth(Some(password_auth(name, PASSWORD, info.session.clone())))
        .await
        .context("resetting cross-signing with the password")?;
    let new_master = until_master_changes(d, d, &old_master).await?;
    until_master_changes(observer, d, &old_master).await?;
    Ok(new_master)
}

/// Waits until `d` holds a master key of `of`'s other than `old`.
async fn until_master_changes(d: &Device, of: &Device, old: &str) -> Result<String> {
    until(
        &format!("{} see a new master key of {}", d.tag, of.user_id),
        async || Ok(master_key_of(d, &of.user_id).await?.is_some_and(|k| k != old)),
        async || {
            format!(
                "  master key: {}, the old one {old}",
                master_key_of(d, &of.user_id).await.ok().flatten().unwrap_or_else(|| "(none)".into())
            )
        },
    )
    .await?;
    Ok(master_key_of(d, &of.user_id).await?.unwrap())
}

/// A custom to-device message to alice's first device, sent twice with one
/// transaction id (a client's retry), then a marker: to-device messages
/// arrive in order, so once the marker is there any duplicate of the ping
/// would be too.
async fn to_device_ping(alice: &Device, alice2: &Device, bob: &Device) -> Result<()> {
    let alice_id = &alice.user_id;
    let nonce = TransactionId::new().to_string();
    let marker = TransactionId::new().to_string();
    let request = |n: &str, txn: &str| -> Result<send_event_to_device::v3::Request> {
        let content: Raw<AnyToDeviceEventContent> =
            Raw::from_json(serde_json::value::to_raw_value(&json!({ "nonce": n }))?);
        let mut messages: send_event_to_device::v3::Messages = BTreeMap::new();
        messages.entry(alice_id.clone()).or_default().insert(DeviceIdOrAllDevices::DeviceId("ALICE1".into()), content);
        Ok(send_event_to_device::v3::Request::new_raw(ToDeviceEventType::from(PING), txn.into(), messages))
    };
    let txn = format!("ping-{nonce}");
    bob.client.send(request(&nonce, &txn)?).await.context("sending the ping")?;
    bob.client.send(request(&nonce, &txn)?).await.context("sending the ping again, same transaction id")?;
    bob.client.send(request(&marker, &format!("ping-{marker}"))?).await.context("sending the marker")?;
    let pings = |d: &Device, n: &str| {
        d.seen()
            .to_device
            .iter()
            .filter(|(ty, sender, content)| ty == PING && *sender == bob.user_id && content["nonce"] == n)
            .count()
    };
    let to_device_seen = |d: &Device| {
        let lines: Vec<String> =
            d.seen().to_device.iter().map(|(ty, sender, c)| format!("  {ty} from {sender}: {c}")).collect();
        if lines.is_empty() { "  (no to-device messages)".to_owned() } else { lines.join("\n") }
    };
    until(
        "the to-device marker at alice's first device",
        async || Ok(pings(alice, &marker) == 1),
        async || to_device_seen(alice),
    )
    .await?;
    let n = pings(alice, &nonce);
    ensure!(n == 1, "the ping arrived exactly once at {}, not {n} times:\n{}", alice.tag, to_device_seen(alice));
    ensure!(
        pings(alice2, &nonce) == 0 && pings(alice2, &marker) == 0,
        "the pings were only for ALICE1, yet {} saw:\n{}",
        alice2.tag,
        to_device_seen(alice2)
    );
    say!("the to-device ping arrived exactly once");
    Ok(())
}

async fn run() -> Result<()> {
    let hub = std::env::var("LMX_HUB_URL").ok();
    let follower = std::env::var("LMX_FOLLOWER_URL").ok();
    let (Some(hub), Some(follower)) = (hub, follower) else {
        bail!("check failed: LMX_HUB_URL and LMX_FOLLOWER_URL are set")
    };
    ensure!(
        std::env::var("LMX_PAUSE").as_deref() != Ok("1"),
        "LMX_PAUSE is not supported by the e2ee scenario (in-memory crypto stores)"
    );
    let suffix = std::env::var("LMX_NAME_SUFFIX").unwrap_or_default();
    let alice_name = format!("ralice{suffix}");
    let bob_name = format!("rbob{suffix}");
    register(&hub, &alice_name).await?;
    register(&follower, &bob_name).await?;
    let alice = device(&hub, &alice_name, "ALICE1").await?;
    let bob = device(&follower, &bob_name, "BOB1").await?;
    let (alice_id, bob_id) = (alice.user_id.clone(), bob.user_id.clone());
    say!("started {} and {} with matrix-sdk 0.18", alice.tag, bob.tag);

    // Each side's crypto sees the other's device keys.
    knows_device(&alice, &bob_id, "BOB1", true).await?;
    knows_device(&bob, &alice_id, "ALICE1", true).await?;
    say!("each knows the other's device");

    let mut request = create_room::v3::Request::new();
    request.visibility = Visibility::Private;
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.name = Some(format!("rust e2ee {suffix}"));
    request.invite = vec![bob_id.clone()];
    request.initial_state =
        vec![InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::new(MEGOLM.into())).to_raw_any()];
    let room_id = alice.client.create_room(request).await.context("creating the room")?.room_id().to_owned();
    let room = room_id.as_ref();
    until(
        "bob's invite",
        async || Ok(bob.room(room).is_some_and(|r| r.state() == RoomState::Invited)),
        async || format!("  bob's room state: {:?}", bob.room(room).map(|r| r.state())),
    )
    .await?;
    bob.client.join_room_by_id(room).await.context("bob joining")?;
    let clients = [&alice, &bob];
    until(
        "both joined, as both see it",
        async || {
            for c in clients {
                if !(joined(c, room, &alice_id).await? && joined(c, room, &bob_id).await?) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
        nothing,
    )
    .await?;
    // A client that does not know the room is encrypted would send in clear.
    until(
        "the room encrypted for both",
        async || Ok(clients.iter().all(|c| encrypted(c, room))),
        async || {
            clients
                .iter()
                .map(|c| format!("  {}: {:?}", c.tag, c.room(room).map(|r| r.encryption_state())))
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
    .await?;
    say!("room {room} is encrypted and both joined");

    send(&alice, room, "secret from alice").await?;
    let m = wait_decrypted(&bob, room, "secret from alice").await?;
    say!("bob decrypted alice's message{}", how(&m));

    send(&bob, room, "secret from bob").await?;
    let m = wait_decrypted(&alice, room, "secret from bob").await?;
    say!("alice decrypted bob's reply{}", how(&m));

    // A second device of alice's: bob learns of it through device_lists and
    // keys/query, claims a one-time key, and shares the room key with it.
    let alice2 = device(&hub, &alice_name, "ALICE2").await?;
    knows_device(&bob, &alice_id, "ALICE2", false).await?;
    until(
        "alice's second device in the room",
        async || Ok(joined(&alice2, room, &bob_id).await? && encrypted(&alice2, room)),
        async || alice2.timeline(room),
    )
    .await?;
    say!("bob knows {}", alice2.tag);
    send(&bob, room, "secret for both of alice's devices").await?;
    let m2 = wait_decrypted(&alice2, room, "secret for both of alice's devices").await?;
    let m1 = wait_decrypted(&alice, room, "secret for both of alice's devices").await?;
    say!("alice's second device decrypted bob's message{}{}", how(&m2), how(&m1));

    to_device_ping(&alice, &alice2, &bob).await?;
    let alice_master = cross_signing(&alice, &alice2, &bob, &alice_name, &bob_name).await?;
    // Alice resets her keys: bob, who had verified her, sees the change.
    let new_master = reset_cross_signing(&alice, &alice_name, &bob, false).await?;
    let identity = bob
        .client
        .encryption()
        .get_user_identity(&alice_id)
        .await?
        .ok_or_else(|| anyhow!("{} holds alice's identity", bob.tag))?;
    ensure!(
        new_master != alice_master && !identity.is_verified() && identity.has_verification_violation(),
        "{} holds alice's new identity as not verified, with a verification violation \
         (verified={} violation={})",
        bob.tag,
        identity.is_verified(),
        identity.has_verification_violation()
    );
    say!(
        "{} reset cross-signing with her password; bob sees her new master key {new_master}, no longer verified",
        alice.tag
    );
    // Bob resets his, first with a wrong password.
    let new_master = reset_cross_signing(&bob, &bob_name, &alice, true).await?;
    say!(
        "{} reset cross-signing after a wrong password was refused; alice sees his new master key {new_master}",
        bob.tag
    );

    for d in [&alice, &alice2, &bob] {
        d.sync.abort();
    }
    say!("OK");
    Ok(())
}

fn main() {
    if std::env::var("LMX_DEBUG").as_deref() == Ok("1") {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,matrix_sdk_crypto=debug"));
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    let result = runtime.block_on(run());
    // Exit without waiting for the clients' tasks to wind down.
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    }
}
