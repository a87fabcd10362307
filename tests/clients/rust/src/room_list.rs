//! matrix-rust-sdk's sync service and room list service (what Element X
//! runs) against lmx's simplified sliding sync, once watched on the hub and
//! once on the follower: the watcher and another user share three rooms
//! (made on the hub); the watcher's room list shows all three, most recent
//! first; a message from the other user in the oldest room moves it to the
//! top; a room the other user then makes and invites the watcher to
//! appears, and once joined it leads the list.
//!
//! Environment: LMX_HUB_URL (alice), LMX_FOLLOWER_URL (bob),
//! LMX_NAME_SUFFIX. Prints progress lines and then OK; on failure exits 1
//! with the reason and the list it last saw.

#![recursion_limit = "256"]

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use matrix_sdk::{
    Client,
    ruma::{
        OwnedRoomId,
        api::client::room::create_room,
        events::room::message::RoomMessageEventContent,
    },
};
use matrix_sdk_ui::{
    eyeball_im::Vector,
    room_list_service::{RoomListItem, filters::new_filter_non_left},
    sync_service::SyncService,
};

const PASSWORD: &str = "room list password";
const PATIENCE: Duration = Duration::from_secs(60);

async fn user(base_url: &str, name: &str) -> Result<Client> {
    common::user(base_url, name, PASSWORD).await
}

async fn room(owner: &Client, name: &str, invite: &Client) -> Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_owned());
    request.invite = vec![invite.user_id().context("logged in")?.to_owned()];
    let room = owner.create_room(request).await.with_context(|| format!("creating {name}"))?;
    Ok(room.room_id().to_owned())
}

async fn say(client: &Client, room: &OwnedRoomId, text: &str) -> Result<()> {
    let room = client.get_room(room).ok_or_else(|| anyhow!("{} does not know {room}", client.user_id().unwrap()))?;
    room.send(RoomMessageEventContent::text_plain(text)).await.with_context(|| format!("sending {text}"))?;
    Ok(())
}

/// Joins `room` once the invite has reached `client`.
async fn join(client: &Client, room: &OwnedRoomId) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.join_room_by_id(room).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("joining {room}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn ids(list: &Vector<RoomListItem>) -> Vec<OwnedRoomId> {
    list.iter().map(|r| r.room_id().to_owned()).collect()
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let hub = std::env::var("LMX_HUB_URL").context("LMX_HUB_URL")?;
    let follower = std::env::var("LMX_FOLLOWER_URL").context("LMX_FOLLOWER_URL")?;
    let suffix = std::env::var("LMX_NAME_SUFFIX").unwrap_or_default();
    let alice = user(&hub, &format!("alice_rl{suffix}")).await?;
    let bob = user(&follower, &format!("bob_rl{suffix}")).await?;
    round("on the hub", &alice, &bob, &alice).await?;
    let carol = user(&follower, &format!("carol_rl{suffix}")).await?;
    let dave = user(&hub, &format!("dave_rl{suffix}")).await?;
    round("on the follower", &carol, &dave, &dave).await?;
    println!("OK");
    Ok(())
}

/// `watcher`'s room list, with `other` in its rooms; `maker` (one of the
/// two, on the hub) makes the first three rooms.
async fn round(place: &str, watcher: &Client, other: &Client, maker: &Client) -> Result<()> {
    // A plain sync loop for the other user, so their client knows the rooms.
    let other_sync = other.clone();
    let other_loop = tokio::spawn(async move { other_sync.sync(Default::default()).await });
    let guest = if maker.user_id() == watcher.user_id() { other } else { watcher };
    let mut rooms = Vec::new();
    for name in ["first", "second", "third"] {
        let id = room(maker, name, guest).await?;
        join(guest, &id).await?;
        rooms.push(id);
    }
    for (id, text) in rooms.iter().zip(["one", "two", "three"]) {
        say(maker, id, text).await?;
    }
    println!("{place}: rooms made");

    let sync = SyncService::builder(watcher.clone()).build().await.context("building the sync service")?;
    sync.start().await;
    let room_list = sync.room_list_service().all_rooms().await.context("the all-rooms list")?;
    let (stream, controller) = room_list.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    let mut stream = Box::pin(stream);
    let mut list: Vector<RoomListItem> = Vector::new();
    let deadline = Instant::now() + PATIENCE * 2;
    let mut wait_for = async |what: &str, done: &dyn Fn(&[OwnedRoomId]) -> bool, list: &mut Vector<RoomListItem>| -> Result<()> {
        while !done(&ids(list)) {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
            let diffs = tokio::time::timeout(left, stream.next())
                .await
                .map_err(|_| anyhow!("{place}: timed out waiting for {what}; the list: {:?}", ids(list)))?
                .ok_or_else(|| anyhow!("the room list stream ended"))?;
            for d in diffs {
                d.apply(list);
            }
        }
        println!("{place}: {what}");
        Ok(())
    };
    let r = rooms.clone();
    wait_for("all three rooms, newest first", &|l| l == [r[2].clone(), r[1].clone(), r[0].clone()], &mut list).await?;

    say(other, &rooms[0], "bump").await?;
    let r = rooms.clone();
    wait_for("the oldest room moved up by a message", &|l| l.first() == Some(&r[0]), &mut list).await?;

    let fourth = room(other, "fourth", watcher).await?;
    let f = fourth.clone();
    wait_for("an invite in the list", &|l| l.contains(&f), &mut list).await?;
    join(watcher, &fourth).await?;
    say(other, &fourth, "welcome").await?;
    let f = fourth.clone();
    wait_for("the joined room leads", &|l| l.first() == Some(&f) && l.len() == 4, &mut list).await?;
    sync.stop().await;
    other_loop.abort();
    Ok(())
}
