"""The end-to-end encryption scenario, driven by matrix-nio with its
vodozemac crypto (`matrix-nio[e2e]`, a store per device in a temporary
directory): alice on the hub and bob on the follower upload device keys and
query each other's, make a megolm room, and each decrypts what the other
sends; alice logs in a second device, which bob learns of through /sync's
device_lists.changed and keys/query, and which decrypts bob's next message
(one-time keys claimed, the room key sent over to-device); a custom to-device
message from bob reaches alice's first device exactly once, even when bob's
client retries the request with the same transaction id.

Environment: LMX_HUB_URL, LMX_FOLLOWER_URL (may be the same server),
LMX_NAME_SUFFIX, and LMX_DEBUG=1 for nio's logs on stderr. LMX_PAUSE is not
supported (the scenario exits non-zero if it is set). Prints progress lines
and then OK."""

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid

from nio import (
    AsyncClient,
    AsyncClientConfig,
    MegolmEvent,
    RoomMessageText,
    RoomPreset,
    RoomVisibility,
    ToDeviceMessage,
    UnknownToDeviceEvent,
)
from nio.crypto import ENCRYPTION_ENABLED
from nio.exceptions import EncryptionError

HUB = os.environ.get("LMX_HUB_URL")
FOLLOWER = os.environ.get("LMX_FOLLOWER_URL")
SUFFIX = os.environ.get("LMX_NAME_SUFFIX", "")
DEBUG = os.environ.get("LMX_DEBUG") == "1"
PASSWORD = "correct horse battery"
MEGOLM = "m.megolm.v1.aes-sha2"
WAIT = 60
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
STORES = tempfile.mkdtemp(prefix="lmx-nio-e2ee-")
CLIENTS = []  # every client made, closed at the end whatever happens
WATCHERS = []  # every watcher started, stopped at the end

# nio logs through `logging`: nothing below warnings, and on stderr, unless
# LMX_DEBUG asks for everything. stdout carries this script's protocol.
logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if DEBUG else logging.ERROR)


def say(line):
    print(line, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(f"check failed: {what}")


def failed(resp):
    return type(resp).__name__.endswith("Error")


def ok(resp, what):
    check(not failed(resp), f"{what}: {resp}")
    return resp


class Watcher:
    """Keeps syncing one device and does what nio's sync_forever does
    between syncs (keys upload, query and claim, queued to-device messages),
    and records what the device saw: timelines after decryption, to-device
    events, the users of device_lists.changed, and every failed request."""

    def __init__(self, client):
        self.client = client
        self.tag = f"{client.user_id}/{client.device_id}"
        self.timeline = {}
        self.invites = set()
        self.to_device = []
        self.changed = []
        self.errors = []
        self.failures = {}  # event id -> why it is not decrypted (yet)
        self.late = set()  # event ids decrypted after the sync that brought them
        self.task = None

    def note(self, resp, what):
        if failed(resp):
            self.errors.append(f"{what}: {resp}")
        return resp

    async def run(self):
        c = self.client
        while True:
            resp = await c.sync(timeout=1000, sync_filter=SYNC_FILTER)
            if failed(resp):
                self.errors.append(f"sync: {resp}")
                await asyncio.sleep(0.2)
                continue
            # nio has decrypted what it could: to-device events first (room
            # keys among them), then the timelines.
            self.to_device.extend(resp.to_device_events)
            for room_id, room in resp.rooms.join.items():
                self.timeline.setdefault(room_id, []).extend(room.timeline.events)
            self.invites.update(resp.rooms.invite.keys())
            if resp.device_list.changed:
                self.changed.append(set(resp.device_list.changed))
            if c.outgoing_to_device_messages:
                for r in await c.send_to_device_messages():
                    self.note(r, "queued to-device message")
            if c.should_upload_keys:
                self.note(await c.keys_upload(), "keys/upload")
            if c.should_query_keys:
                self.note(await c.keys_query(), "keys/query")
            if c.should_claim_keys:
                self.note(await c.keys_claim(c.get_users_for_key_claiming()), "keys/claim")
            self.retry_decryption()

    def retry_decryption(self):
        """A room key can come in a later sync than the message it opens,
        for example across servers: try again what is still encrypted."""
        for events in self.timeline.values():
            for i, e in enumerate(events):
                if not isinstance(e, MegolmEvent):
                    continue
                try:
                    events[i] = self.client.decrypt_event(e)
                    self.late.add(e.event_id)
                except EncryptionError as err:
                    self.failures[e.event_id] = str(err)

    def start(self):
        self.task = asyncio.ensure_future(self.run())
        WATCHERS.append(self)

    async def stop(self):
        if self.task is None:
            return
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass

    def devices(self, user_id):
        return {d.id: d for d in self.client.device_store.active_user_devices(user_id)}

    def room(self, room_id):
        return self.client.rooms.get(room_id)

    def joined(self, room_id, user_id):
        room = self.room(room_id)
        return room is not None and user_id in room.users and not room.users[user_id].invited

    def decrypted(self, room_id, body, sender):
        """The message `body` as this device decrypted it: sent with megolm
        by `sender`'s device (its curve25519 key), decrypted without error."""
        key = sender.client.olm.account.identity_keys["curve25519"]
        return [e for e in self.timeline.get(room_id, [])
                if isinstance(e, RoomMessageText) and e.decrypted and e.body == body
                and e.sender == sender.client.user_id and e.sender_key == key]

    def pings(self, kind, sender, nonce):
        return [e for e in self.to_device
                if isinstance(e, UnknownToDeviceEvent) and e.type == kind and e.sender == sender
                and e.source.get("content", {}).get("nonce") == nonce]

    def describe(self, room_id=None):
        """What this device saw, for failure messages."""
        lines = []
        if room_id is not None:
            room = self.room(room_id)
            lines.append(f"{self.tag} in {room_id} (encrypted: {room.encrypted if room else 'room unknown'}):")
            events = self.timeline.get(room_id, [])
            for e in events:
                if isinstance(e, MegolmEvent):
                    state = f"undecryptable: {self.failures.get(e.event_id, 'not tried')}"
                elif getattr(e, "decrypted", False):
                    state = "decrypted" + (" on a later try" if e.event_id in self.late else "")
                else:
                    state = "plaintext"
                what = json.dumps(getattr(e, "body", None)) if hasattr(e, "body") else getattr(e, "state_key", "") or ""
                lines.append(f"  {e.event_id} {e.sender} {type(e).__name__} {what} [{state}]")
            if not events:
                lines.append("  (no events)")
        else:
            lines.append(f"{self.tag}:")
        if self.to_device:
            lines.append("to-device events:")
            for e in self.to_device:
                kind = e.source.get("type", getattr(e, "type", ""))
                lines.append(f"  {type(e).__name__} {kind} from {e.sender}: {json.dumps(e.source.get('content'))[:200]}")
        else:
            lines.append("  (no to-device events)")
        if self.changed:
            lines.append(f"device_lists.changed: {[sorted(s) for s in self.changed]}")
        known = {u: sorted(self.devices(u)) for u in self.client.device_store.users}
        lines.append(f"devices known: {known}")
        if self.errors:
            lines.append("failed requests:")
            lines.extend(f"  {e}" for e in self.errors[-10:])
        return "\n".join(lines)


async def until(what, pred, detail=lambda: "", timeout=WAIT):
    """Polls `pred` until it holds; on timeout the error carries `detail()`,
    what the clients saw instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.1)
    seen = detail()
    raise AssertionError(f"never saw {what} within {timeout} s" + (f"; saw:\n{seen}" if seen else ""))


async def register(url, name):
    # No device for the registration itself: each device of the scenario
    # logs in with a fixed id and uploads keys.
    anon = AsyncClient(url)
    CLIENTS.append(anon)
    try:
        resp = await anon.send("POST", "/_matrix/client/v3/register", json.dumps({
            "username": name, "password": PASSWORD,
            "auth": {"type": "m.login.dummy"}, "inhibit_login": True}),
            headers={"Content-Type": "application/json"})
        body = await resp.text()
        check(resp.status == 200, f"register {name}: {resp.status} {body}")
    finally:
        await anon.close()


async def device(url, name, device_id):
    """Logs `name` in as `device_id` with a fresh crypto store, uploads its
    device keys and one-time keys, and returns its watcher (not started)."""
    store = tempfile.mkdtemp(prefix=f"{device_id}-", dir=STORES)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    c = AsyncClient(url, name, device_id=device_id, store_path=store, config=config)
    CLIENTS.append(c)
    login = ok(await c.login(PASSWORD, device_name=f"e2ee {device_id}"), f"login {name} as {device_id}")
    check(login.device_id == device_id, f"login keeps the requested device id {device_id} (got {login.device_id})")
    check(c.olm is not None, f"{device_id} has an Olm machine")
    check(c.should_upload_keys, f"{device_id} has keys to upload")
    up = ok(await c.keys_upload(), f"keys/upload of {device_id}")
    check(up.signed_curve25519_count > 0, f"keys/upload of {device_id} counts its one-time keys: {up}")
    check(c.olm_account_shared, f"{device_id}'s account is marked uploaded")
    return Watcher(c)


async def query(w, other):
    """An explicit keys/query of `other`'s user by `w`: the answer holds
    `other`'s device with the identity keys it uploaded, and nio accepts it
    (its signature checks) into the device store."""
    c, user_id, device_id = w.client, other.client.user_id, other.client.device_id
    c.users_for_key_query.add(user_id)
    resp = ok(await c.keys_query(), f"{w.tag}'s keys/query for {user_id}")
    check(not resp.failures, f"keys/query has no failures: {resp.failures}")
    keys = resp.device_keys.get(user_id, {}).get(device_id)
    check(keys is not None, f"keys/query by {w.tag} returns {user_id}'s {device_id}: {resp.device_keys}")
    ours = other.client.olm.account.identity_keys
    check(keys["keys"].get(f"ed25519:{device_id}") == ours["ed25519"]
          and keys["keys"].get(f"curve25519:{device_id}") == ours["curve25519"],
          f"keys/query returns the identity keys {device_id} uploaded: {keys['keys']} vs {ours}")
    known = w.devices(user_id).get(device_id)
    check(known is not None and known.ed25519 == ours["ed25519"],
          f"{w.tag}'s nio accepted {device_id}'s keys (signed by the device): {w.describe()}")


async def send(w, room_id, body):
    resp = await w.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                    ignore_unverified_devices=True)
    ok(resp, f"{w.tag} sends {body!r}")
    return resp.event_id


async def main():
    check(HUB and FOLLOWER, "LMX_HUB_URL and LMX_FOLLOWER_URL are set")
    check(os.environ.get("LMX_PAUSE") != "1", "LMX_PAUSE is not supported by the e2ee scenario")
    check(ENCRYPTION_ENABLED, "matrix-nio has its encryption dependencies (pip install 'matrix-nio[e2e]')")
    alice_name, bob_name = f"nalice{SUFFIX}", f"nbob{SUFFIX}"
    await register(HUB, alice_name)
    await register(FOLLOWER, bob_name)
    wa = await device(HUB, alice_name, "ALICE1")
    wb = await device(FOLLOWER, bob_name, "BOB1")
    alice, bob = wa.client, wb.client
    watchers = [wa, wb]
    say(f"logged in {wa.tag} and {wb.tag}, keys uploaded")

    # Each side's keys/query returns the other's device as it uploaded it.
    await query(wa, wb)
    await query(wb, wa)
    say("each device's keys/query returns the other's keys")
    for w in watchers:
        w.start()

    room = ok(await alice.room_create(
        visibility=RoomVisibility.private, preset=RoomPreset.private_chat,
        name=f"nio e2ee {SUFFIX}", invite=[bob.user_id],
        initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}]),
        "create the encrypted room").room_id
    await until("bob's invite", lambda: room in wb.invites, lambda: wb.describe())
    ok(await bob.join(room), "bob joins")
    await until("both joined, as both see it",
                lambda: all(w.joined(room, u) for w in watchers for u in (alice.user_id, bob.user_id)),
                lambda: "\n".join(w.describe(room) for w in watchers))
    # A client that does not know the room is encrypted would send in clear.
    await until("the room encrypted for both", lambda: all(w.room(room).encrypted for w in watchers),
                lambda: "\n".join(w.describe(room) for w in watchers))
    say(f"room {room} is encrypted and both joined")

    await send(wa, room, "secret from alice")
    await until("bob decrypt alice's message", lambda: wb.decrypted(room, "secret from alice", wa),
                lambda: wb.describe(room))
    say("bob decrypted alice's message")

    await send(wb, room, "secret from bob")
    await until("alice decrypt bob's reply", lambda: wa.decrypted(room, "secret from bob", wb),
                lambda: wa.describe(room))
    say("alice decrypted bob's reply")

    # A second device of alice's: bob learns of it through device_lists and
    # keys/query, claims a one-time key, and shares a new room key with it.
    changes_before = len(wb.changed)
    wa2 = await device(HUB, alice_name, "ALICE2")
    alice2 = wa2.client
    watchers.append(wa2)
    wa2.start()
    await until(f"{alice.user_id} in bob's device_lists.changed",
                lambda: any(alice.user_id in s for s in wb.changed[changes_before:]), lambda: wb.describe())
    alice2_keys = alice2.olm.account.identity_keys
    await until("bob know ALICE2's keys",
                lambda: "ALICE2" in wb.devices(alice.user_id)
                and wb.devices(alice.user_id)["ALICE2"].curve25519 == alice2_keys["curve25519"],
                lambda: wb.describe())
    await until("alice's second device in the encrypted room",
                lambda: wa2.joined(room, bob.user_id) and wa2.room(room).encrypted, lambda: wa2.describe(room))
    say(f"bob knows {wa2.tag}")
    await send(wb, room, "secret for both of alice's devices")
    await until("ALICE2 decrypt bob's message", lambda: wa2.decrypted(room, "secret for both of alice's devices", wb),
                lambda: wa2.describe(room))
    await until("ALICE1 decrypt bob's message", lambda: wa.decrypted(room, "secret for both of alice's devices", wb),
                lambda: wa.describe(room))
    say("alice's second device decrypted bob's message")

    # A custom to-device message to alice's first device, sent twice with
    # one transaction id (a client's retry), then a marker: to-device
    # messages arrive in order, so once the marker is there any duplicate
    # of the ping would be too.
    ping = "org.example.ping"
    nonce, marker = str(uuid.uuid4()), str(uuid.uuid4())
    to = lambda n: ToDeviceMessage(ping, alice.user_id, "ALICE1", {"nonce": n})
    txn = f"ping-{nonce}"
    ok(await bob.to_device(to(nonce), txn), "the ping")
    ok(await bob.to_device(to(nonce), txn), "the ping again, same transaction id")
    ok(await bob.to_device(to(marker), f"ping-{marker}"), "the marker")
    await until("the to-device marker at alice's first device", lambda: len(wa.pings(ping, bob.user_id, marker)) == 1,
                lambda: wa.describe())
    n = len(wa.pings(ping, bob.user_id, nonce))
    check(n == 1, f"the ping arrived exactly once at {wa.tag}, not {n} times:\n{wa.describe()}")
    check(not wa2.pings(ping, bob.user_id, nonce) and not wa2.pings(ping, bob.user_id, marker),
          f"the pings were only for ALICE1, yet {wa2.tag} saw them:\n{wa2.describe()}")
    say("the to-device ping arrived exactly once")


async def scenario():
    try:
        await main()
    finally:
        for w in WATCHERS:
            await w.stop()
        for c in CLIENTS:
            await c.close()


def run():
    try:
        asyncio.run(scenario())
        say("OK")
    except Exception as e:  # noqa: BLE001 - any failure is the scenario's
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        shutil.rmtree(STORES, ignore_errors=True)


run()
