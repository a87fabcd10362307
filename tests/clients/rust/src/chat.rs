//! A day's chat through matrix-rust-sdk: alice on the hub, bob on a
//! follower, carol on Synapse. alice makes a space holding two rooms: an
//! LM room (alice and bob) and a mixed room of version 12 (all three).
//! In each room alice sends an image (an attachment: uploaded, then an
//! `m.image` event); the others download it and a thumbnail of it; bob
//! replies to it, carol (or bob) reacts to it, alice starts a thread that
//! bob answers, and everyone sees all of it: the reply's target, the
//! reaction among the image's relations, the thread in the room's thread
//! list. bob sets a pusher first (the test checks its gateway got the
//! images), and reads the space's hierarchy.
//!
//! Environment: LMX_HUB_URL, LMX_FOLLOWER_URL, LMX_SYNAPSE_URL, LMX_HUB_NAME,
//! LMX_GATEWAY_URL, LMX_IMAGE (a PNG file), LMX_NAME_SUFFIX. Prints
//! `IMAGE <room kind> <event id>` for each image, then OK; on failure exits
//! 1 with the reason.

#![recursion_limit = "256"]

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use matrix_sdk::{
    Client, Room,
    attachment::AttachmentConfig,
    media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings},
    room::reply::{EnforceThread, Reply},
    ruma::{
        OwnedEventId, OwnedRoomId, RoomVersionId,
        api::client::{
            push::{PusherIds, PusherInit, PusherKind},
            room::create_room,
            space::get_hierarchy,
        },
        events::{
            AnyMessageLikeEventContent,
            reaction::ReactionEventContent,
            relation::{Annotation, Thread},
            room::message::{
                AddMentions, MessageType, Relation, RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
            },
            space::child::SpaceChildEventContent,
        },
        push::HttpPusherData,
        room::RoomType,
        serde::Raw,
    },
};

const PASSWORD: &str = "chat password";
const PATIENCE: Duration = Duration::from_secs(90);

async fn user(base_url: &str, name: &str) -> Result<Client> {
    common::user(base_url, name, PASSWORD).await
}

/// Retries `attempt` until it succeeds or `PATIENCE` passes.
async fn eventually<T, F: std::future::Future<Output = Result<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("timed out: {what}"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

async fn join(client: &Client, room: &OwnedRoomId) -> Result<Room> {
    let who = client.user_id().unwrap().to_string();
    eventually(&format!("{who} joins {room}"), || async { Ok(client.join_room_by_id(room).await?) }).await
}

/// An event of `room` as `client` reads it from its server.
async fn read(client: &Client, room: &OwnedRoomId, id: &OwnedEventId) -> Result<serde_json::Value> {
    let who = client.user_id().unwrap().to_string();
    eventually(&format!("{who} sees {id}"), || async {
        let room = client.get_room(room).ok_or_else(|| anyhow!("{who} does not know {room}"))?;
        let event = room.event(id, None).await?;
        Ok(serde_json::from_str(event.raw().json().get())?)
    })
    .await
}

fn message(event: &serde_json::Value) -> Result<RoomMessageEventContent> {
    Ok(serde_json::from_value(event["content"].clone()).with_context(|| format!("not a message: {event}"))?)
}

async fn send(room: &Room, content: impl Into<AnyMessageLikeEventContent>) -> Result<OwnedEventId> {
    Ok(room.send(content.into()).await?.response.event_id)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let env = |k: &str| std::env::var(k).with_context(|| k.to_owned());
    let suffix = std::env::var("LMX_NAME_SUFFIX").unwrap_or_default();
    let image = std::fs::read(env("LMX_IMAGE")?).context("reading the image")?;
    let hub_name = env("LMX_HUB_NAME")?;
    let alice = user(&env("LMX_HUB_URL")?, &format!("alice_chat{suffix}")).await?;
    let bob = user(&env("LMX_FOLLOWER_URL")?, &format!("bob_chat{suffix}")).await?;
    let carol = user(&env("LMX_SYNAPSE_URL")?, &format!("carol_chat{suffix}")).await?;

    let mut pusher = HttpPusherData::new(env("LMX_GATEWAY_URL")?);
    pusher.data.insert("app".into(), "chat test".into());
    let ids = PusherIds::new(format!("bob-chat{suffix}"), "org.example.chat".into());
    let init = PusherInit {
        ids,
        kind: PusherKind::Http(pusher),
        app_display_name: "Chat".into(),
        device_display_name: "bob's phone".into(),
        profile_tag: None,
        lang: "en".into(),
    };
    bob.pusher().set(init.into(), false).await.context("bob sets a pusher")?;
    println!("pusher set");

    let mut request = create_room::v3::Request::new();
    request.name = Some("Our space".into());
    let mut creation = create_room::v3::CreationContent::new();
    creation.room_type = Some(RoomType::Space);
    request.creation_content = Some(Raw::new(&creation)?);
    request.invite = vec![bob.user_id().unwrap().to_owned()];
    let space = alice.create_room(request).await.context("creating the space")?;
    join(&bob, &space.room_id().to_owned()).await?;

    let mut children = Vec::new();
    for (kind, version, others) in [("lm", None, vec![&bob]), ("mixed", Some(RoomVersionId::V12), vec![&bob, &carol])] {
        let mut request = create_room::v3::Request::new();
        request.name = Some(format!("{kind} chat"));
        request.room_version = version;
        request.invite = others.iter().map(|c| c.user_id().unwrap().to_owned()).collect();
        let room = alice.create_room(request).await.with_context(|| format!("creating the {kind} room"))?;
        let id = room.room_id().to_owned();
        let via = SpaceChildEventContent::new(vec![hub_name.as_str().try_into()?]);
        space.send_state_event_for_key(&id, via).await.context("adding the room to the space")?;
        for c in &others {
            join(c, &id).await?;
        }
        chat(kind, &alice, &others, &room, &image).await?;
        children.push(id);
    }

    // The space as bob's client reads it.
    let hierarchy = bob.send(get_hierarchy::v1::Request::new(space.room_id().to_owned())).await?;
    let listed: Vec<OwnedRoomId> = hierarchy.rooms.iter().map(|r| r.summary.room_id.clone()).collect();
    ensure!(listed.first() == Some(&space.room_id().to_owned()), "the space comes first: {listed:?}");
    for c in &children {
        ensure!(listed.contains(c), "the space lists {c}: {listed:?}");
    }
    println!("hierarchy: {} rooms", listed.len());
    println!("OK");
    Ok(())
}

/// One room's chat: `alice` sends, `others` (bob first) answer.
async fn chat(kind: &str, alice: &Client, others: &[&Client], room: &Room, image: &[u8]) -> Result<()> {
    let id = room.room_id().to_owned();
    let bob = others[0];
    let reacting = others.last().unwrap();

    let sent = room
        .send_attachment("cat.png", &mime::IMAGE_PNG, image.to_vec(), AttachmentConfig::new())
        .await
        .context("sending the image")?;
    let image_id = sent.event_id;
    println!("IMAGE {kind} {image_id}");
    for c in others {
        let event = read(c, &id, &image_id).await?;
        let MessageType::Image(img) = message(&event)?.msgtype else { bail!("not an image: {event:?}") };
        let file = MediaRequestParameters { source: img.source.clone(), format: MediaFormat::File };
        let got = c.media().get_media_content(&file, false).await.context("downloading the image")?;
        ensure!(got == image, "{kind}: the image came back changed ({} bytes)", got.len());
        let small = MediaThumbnailSettings::new(32u32.into(), 32u32.into());
        let thumb = MediaRequestParameters { source: img.source, format: MediaFormat::Thumbnail(small) };
        let got = c.media().get_media_content(&thumb, false).await.context("a thumbnail")?;
        let is_image = got.starts_with(b"\x89PNG") || got.starts_with(b"\xff\xd8");
        ensure!(
            is_image && got.len() < image.len(),
            "{kind}: a thumbnail smaller than the image: {} bytes of {}",
            got.len(),
            image.len()
        );
    }
    println!("{kind}: image downloaded with a thumbnail");

    let bob_room = bob.get_room(&id).context("bob's room")?;
    let reply = bob_room
        .make_reply_event(
            RoomMessageEventContentWithoutRelation::text_plain("nice cat"),
            Reply {
                event_id: image_id.clone(),
                enforce_thread: EnforceThread::Unthreaded,
                add_mentions: AddMentions::Yes,
            },
        )
        .await
        .context("making the reply")?;
    let reply_id = send(&bob_room, reply).await?;
    let seen = message(&read(alice, &id, &reply_id).await?)?;
    match seen.relates_to {
        Some(Relation::Reply(r)) if r.in_reply_to.event_id == image_id => {}
        other => bail!("{kind}: the reply does not point at the image: {other:?}"),
    }
    println!("{kind}: reply seen");

    let reacting_room = reacting.get_room(&id).context("the reacting user's room")?;
    let reaction =
        send(&reacting_room, ReactionEventContent::new(Annotation::new(image_id.clone(), "👍".into()))).await?;
    eventually(&format!("{kind}: the reaction among the image's relations"), || async {
        let relations = room.relations(image_id.clone(), Default::default()).await?;
        let ids: Vec<String> = relations.chunk.iter().filter_map(|e| e.event_id().map(|i| i.to_string())).collect();
        ensure!(ids.contains(&reaction.to_string()), "relations: {ids:?}");
        Ok(())
    })
    .await?;
    println!("{kind}: reaction seen");

    let root = send(room, RoomMessageEventContent::text_plain("a thread about cats")).await?;
    read(bob, &id, &root).await?;
    let mut answer = RoomMessageEventContent::text_plain("in the thread");
    answer.relates_to = Some(Relation::Thread(Thread::plain(root.clone(), root.clone())));
    let answer_id = send(&bob_room, answer).await?;
    let seen = message(&read(alice, &id, &answer_id).await?)?;
    ensure!(
        matches!(seen.relates_to, Some(Relation::Thread(t)) if t.event_id == root),
        "{kind}: the answer is in the thread"
    );
    eventually(&format!("{kind}: the thread in bob's thread list"), || async {
        let threads = bob_room.list_threads(Default::default()).await?;
        let roots: Vec<String> = threads.chunk.iter().filter_map(|e| e.event_id().map(|i| i.to_string())).collect();
        ensure!(roots.contains(&root.to_string()), "threads: {roots:?}");
        Ok(())
    })
    .await?;
    println!("{kind}: thread listed");
    Ok(())
}
