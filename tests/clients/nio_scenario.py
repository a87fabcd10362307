"""A chat scenario driven by matrix-nio against an lmx hub and an lmx
follower: two users on different servers register, log in, make a DM and a
group room, invite, join, send text, an edit, a reaction, a reply and a
redaction, set a topic, page history back past the follower's cache, see
typing and a read receipt, and leave. Every check compares what the two
clients see with what was sent.

Environment: LMX_HUB_URL, LMX_FOLLOWER_URL, LMX_NAME_SUFFIX, and
LMX_PAUSE=1 to print PAUSE and wait for a line on stdin half-way (the test
restarts both servers there)."""

import asyncio
import os
import sys
import time

from nio import AsyncClient, RoomMessagesResponse, RoomPreset, RoomVisibility

HUB = os.environ["LMX_HUB_URL"]
FOLLOWER = os.environ["LMX_FOLLOWER_URL"]
SUFFIX = os.environ.get("LMX_NAME_SUFFIX", "")
PAUSE = os.environ.get("LMX_PAUSE") == "1"
PASSWORD = "correct horse battery"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def ok(resp, what):
    check(not type(resp).__name__.endswith("Error"), f"{what}: {resp}")
    return resp


class Watcher:
    """Keeps syncing one client and records what it sees, raw."""

    def __init__(self, client):
        self.client = client
        self.timeline = {}
        self.ephemeral = {}
        self.invites = set()
        self.since = None
        self.task = None

    async def run(self):
        while True:
            resp = await self.client.sync(timeout=500, since=self.since,
                                          sync_filter={"room": {"timeline": {"limit": 100}}})
            if type(resp).__name__.endswith("Error"):
                await asyncio.sleep(0.2)
                continue
            self.since = resp.next_batch
            for room_id, room in resp.rooms.join.items():
                self.timeline.setdefault(room_id, []).extend(e.source for e in room.timeline.events)
                self.ephemeral.setdefault(room_id, []).extend(e.__dict__ for e in room.ephemeral)
            self.invites.update(resp.rooms.invite.keys())

    def start(self):
        self.task = asyncio.ensure_future(self.run())

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass

    def events(self, room_id, kind=None):
        return [e for e in self.timeline.get(room_id, []) if kind is None or e["type"] == kind]

    async def until(self, what, pred, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.client.user_id} never saw {what}")


async def account(url, name):
    c = AsyncClient(url, name)
    ok(await c.register(name, PASSWORD, "setup"), f"register {name}")
    await c.close()
    # A fresh client logs in with the password.
    c = AsyncClient(url, name)
    ok(await c.login(PASSWORD, "scenario"), f"login {name}")
    return c


def bodies(events):
    return [e["content"].get("body") for e in events if e["type"] == "m.room.message"]


async def main():
    alice = await account(HUB, "alice" + SUFFIX)
    bob = await account(FOLLOWER, "bob" + SUFFIX)
    wa, wb = Watcher(alice), Watcher(bob)
    wa.start()
    wb.start()

    # A DM and a group room, both hubbed by alice's server.
    dm = ok(await alice.room_create(is_direct=True, invite=[bob.user_id], preset=RoomPreset.trusted_private_chat), "dm").room_id
    group = ok(await alice.room_create(visibility=RoomVisibility.private, name="group " + SUFFIX, topic="start",
                                       invite=[bob.user_id]), "group").room_id
    await wb.until("both invites", lambda: {dm, group} <= wb.invites)
    ok(await bob.join(dm), "bob joins the dm")
    ok(await bob.join(group), "bob joins the group")
    await wa.until("bob's joins", lambda: all(
        any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id and e["content"]["membership"] == "join"
            for e in wa.events(r)) for r in (dm, group)))

    ok(await alice.room_send(dm, "m.room.message", {"msgtype": "m.text", "body": "hi bob"}), "dm message")
    ok(await bob.room_send(dm, "m.room.message", {"msgtype": "m.text", "body": "hi alice"}), "dm answer")

    hello = ok(await alice.room_send(group, "m.room.message", {"msgtype": "m.text", "body": "hello"}), "hello").event_id
    ok(await alice.room_send(group, "m.room.message", {
        "msgtype": "m.text", "body": "* hello, all",
        "m.new_content": {"msgtype": "m.text", "body": "hello, all"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": hello}}), "edit")
    ok(await bob.room_send(group, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": hello, "key": "👍"}}), "reaction")
    ok(await bob.room_send(group, "m.room.message", {
        "msgtype": "m.text", "body": "> hello\n\nreply",
        "m.relates_to": {"m.in_reply_to": {"event_id": hello}}}), "reply")
    oops = ok(await bob.room_send(group, "m.room.message", {"msgtype": "m.text", "body": "oops"}), "oops").event_id
    ok(await bob.room_redact(group, oops, reason="typo"), "redaction")
    ok(await alice.room_put_state(group, "m.room.topic", {"topic": "lm interop"}), "topic")

    if PAUSE:
        print("PAUSE", flush=True)
        await wa.stop()
        await wb.stop()
        sys.stdin.readline()
        wa.start()
        wb.start()

    # Enough history that the follower keeps only part of it.
    sent = [f"m{i}" for i in range(45)]
    for i, body in enumerate(sent):
        sender = alice if i % 3 else bob
        ok(await sender.room_send(group, "m.room.message", {"msgtype": "m.text", "body": body}), body)

    # Both clients see the same timeline, in the same order.
    await wb.until("the last message", lambda: "m44" in bodies(wb.events(group)))
    await wa.until("the last message", lambda: "m44" in bodies(wa.events(group)))
    ids = lambda w: [e["event_id"] for e in w.events(group) if e["type"] in ("m.room.message", "m.reaction", "m.room.redaction")]
    tail_a, tail_b = ids(wa), ids(wb)
    check(tail_a[-50:] == tail_b[-50:], "both clients see the same events in the same order")
    check(bodies(wb.events(group))[-45:] == sent, "messages in the order sent")

    # Typing and a read receipt cross servers.
    ok(await bob.room_typing(group, True, 10000), "typing")
    await wa.until("bob typing", lambda: any(bob.user_id in e.get("users", []) for e in wa.ephemeral.get(group, [])))
    last_bob = [e for e in wb.events(group) if e["sender"] == bob.user_id][-1]["event_id"]
    ok(await alice.room_read_markers(group, last_bob, last_bob), "read markers")
    await wb.until("alice's receipt", lambda: any(
        any(r.user_id == alice.user_id for r in e.get("receipts", [])) for e in wb.ephemeral.get(group, [])))

    # Paging back past the follower's cache, to the room's creation.
    seen, token = [], None
    for _ in range(60):
        resp = await bob.room_messages(group, start=token, limit=20)
        check(isinstance(resp, RoomMessagesResponse), f"messages: {resp}")
        seen.extend(e.source for e in resp.chunk)
        if not resp.end or not resp.chunk:
            break
        token = resp.end
    types = [e["type"] for e in seen]
    check(types[-1] == "m.room.create", f"history reaches the create event, ends with {types[-5:]}")
    check(bodies(list(reversed(seen)))[-45:] == sent, "history holds every message in order")
    edited = [e for e in seen if e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"]
    check(edited and edited[0]["content"]["m.new_content"]["body"] == "hello, all", "the edit")
    reaction = [e for e in seen if e["type"] == "m.reaction"]
    check(reaction and reaction[0]["content"]["m.relates_to"]["key"] == "👍", "the reaction")
    reply = [e for e in seen if "m.in_reply_to" in e["content"].get("m.relates_to", {})]
    check(reply and reply[0]["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == hello, "the reply")
    redacted = [e for e in seen if e["event_id"] == oops]
    check(redacted and redacted[0]["content"] == {}, "the redacted message has no content")
    topic = [e for e in seen if e["type"] == "m.room.topic"]
    check(topic[0]["content"]["topic"] == "lm interop", "newest topic first")
    # What alice's server and bob's server hand out agree.
    a_seen = []
    token = None
    for _ in range(60):
        resp = await alice.room_messages(group, start=token, limit=50)
        a_seen.extend(e.source for e in resp.chunk)
        if not resp.end or not resp.chunk:
            break
        token = resp.end
    check([e["event_id"] for e in a_seen] == [e["event_id"] for e in seen], "hub and follower histories agree")

    ok(await bob.room_leave(group), "leave")
    await wa.until("bob's leave", lambda: any(
        e["type"] == "m.room.member" and e["state_key"] == bob.user_id and e["content"]["membership"] == "leave"
        for e in wa.events(group)))
    await wa.stop()
    await wb.stop()
    await alice.close()
    await bob.close()
    print("OK", flush=True)


asyncio.run(main())
