"""Media with matrix-nio across an lmx follower, an lmx hub and a Synapse
in one mixed room: an image uploaded on the follower is downloaded, with
thumbnails, by users of the hub and of Synapse; an image uploaded on
Synapse is downloaded, with thumbnails, by users of the follower and the
hub. Every download is compared byte for byte with what was uploaded, and
every thumbnail is a PNG or JPEG no larger than the size served.

Environment: LMX_HUB_URL, LMX_FOLLOWER_URL, LMX_SYNAPSE_URL, LMX_HUB_NAME
(the hub's server name), LMX_ROOM_VERSION."""

import asyncio
import io
import os
import struct
import zlib

from nio import AsyncClient, ResizingMethod, RoomPreset

HUB = os.environ["LMX_HUB_URL"]
FOLLOWER = os.environ["LMX_FOLLOWER_URL"]
SYNAPSE = os.environ["LMX_SYNAPSE_URL"]
HUB_NAME = os.environ["LMX_HUB_NAME"]
VERSION = os.environ["LMX_ROOM_VERSION"]
PASSWORD = "correct horse battery"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def ok(resp, what):
    check(not type(resp).__name__.endswith("Error"), f"{what}: {resp}")
    return resp


def png(width, height, seed):
    """A real RGB PNG, made with the standard library."""
    rows = b"".join(
        b"\x00" + b"".join(bytes(((x * seed) % 256, (y * 3) % 256, seed % 256)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def image_size(data):
    """Width and height of a PNG or JPEG."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return struct.unpack(">II", data[16:24])
    check(data.startswith(b"\xff\xd8"), f"a thumbnail is a PNG or JPEG, not {data[:8]!r}")
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise AssertionError("no JPEG frame header")


async def user(url, name):
    c = AsyncClient(url, name)
    ok(await c.register(name, PASSWORD), f"register {name} on {url}")
    return c


async def upload(c, data, filename):
    resp, _ = await c.upload(io.BytesIO(data), content_type="image/png", filename=filename, filesize=len(data))
    ok(resp, f"upload by {c.user_id}")
    check(resp.content_uri.startswith("mxc://"), f"an mxc uri: {resp.content_uri}")
    return resp.content_uri


async def sees_image(c, room, url):
    """Syncs until `c` has the m.image event naming `url`."""
    since = None
    for _ in range(120):
        resp = ok(await c.sync(timeout=500, since=since), f"sync of {c.user_id}")
        since = resp.next_batch
        room_info = resp.rooms.join.get(room)
        if room_info and any(e.source.get("content", {}).get("url") == url for e in room_info.timeline.events):
            return
    raise AssertionError(f"{c.user_id} never saw the image {url}")


async def fetches(c, url, data, filename, who):
    server, media_id = url[len("mxc://"):].split("/", 1)
    got = await c.download(mxc=url)
    ok(got, f"{who} downloads {url}")
    check(got.body == data, f"{who}: the downloaded bytes are the uploaded ones ({len(got.body)} vs {len(data)})")
    check(got.content_type.startswith("image/png"), f"{who}: content type {got.content_type}")
    check(got.filename in (filename, None), f"{who}: file name {got.filename}")
    for (w, h, method, most) in [(64, 64, ResizingMethod.crop, (96, 96)), (300, 200, ResizingMethod.scale, (320, 240))]:
        t = await c.thumbnail(server, media_id, w, h, method=method)
        ok(t, f"{who} thumbnail {w}x{h} {method}")
        tw, th = image_size(t.body)
        check(0 < tw <= most[0] and 0 < th <= most[1] and max(tw, th) >= min(w, h), f"{who}: thumbnail of {tw}x{th}")
    print(f"{who} fetched {url}", flush=True)


async def main():
    alice = await user(HUB, "alice")
    bob = await user(FOLLOWER, "bob")
    carol = await user(SYNAPSE, "carol")
    room = ok(await alice.room_create(preset=RoomPreset.public_chat, room_version=VERSION), "create").room_id
    for c in (bob, carol):
        # Invited first: Synapse learns the room's servers from the invite.
        ok(await alice.room_invite(room, c.user_id), f"invite {c.user_id}")
        for _ in range(60):
            if not type(await c.join(room)).__name__.endswith("Error"):
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"{c.user_id} could not join")

    from_follower = png(400, 300, 7)
    url = await upload(bob, from_follower, "follower.png")
    ok(await bob.room_send(room, "m.room.message", {"msgtype": "m.image", "body": "follower.png", "url": url}), "send")
    for c, who in ((alice, "hub"), (carol, "synapse")):
        await sees_image(c, room, url)
        await fetches(c, url, from_follower, "follower.png", who)

    from_synapse = png(250, 500, 11)
    url = await upload(carol, from_synapse, "synapse.png")
    ok(await carol.room_send(room, "m.room.message", {"msgtype": "m.image", "body": "synapse.png", "url": url}), "send")
    for c, who in ((bob, "follower"), (alice, "hub")):
        await sees_image(c, room, url)
        await fetches(c, url, from_synapse, "synapse.png", who)

    for c in (alice, bob, carol):
        await c.close()
    print("OK", flush=True)


asyncio.run(main())
