#!/usr/bin/env python3
"""Writes the room_sequence seeds: scripted room histories encoded the way
fuzz_targets/room_sequence.rs decodes its input with `arbitrary` (derived
enums take a little-endian u32 and pick variant (v * count) >> 32; bools
and Options take one byte, bit 0; integers are little-endian).

Keep the tables below in step with the types in the target. A seed that no
longer decodes as written is still a valid input, just a less useful one.

    python3 fuzz/seeds/room_sequence_seeds.py
"""

import os
import random
import struct

USERS = ["alice", "dave", "bob", "carol"]  # index = position in USERS there
LEVELS = ["zero", "fifty", "hundred", "negative", "above_creator", "max_safe"]
JOIN_RULES = ["public", "invite", "knock", "restricted", "private", "absent", "not_a_string"]
MEMBERSHIPS = ["join", "leave", "invite", "ban", "knock", "unknown"]
ODD = ["string_level", "float_level", "non_lm_user", "users_not_a_map", "notifications"]
BREAKAGES = ["stale_prev", "no_prev", "double_prev", "unknown_prev", "drop_auth", "duplicate_auth", "foreign_auth"]
BREAKAGES_WITH_BYTE = {"stale_prev", "drop_auth", "duplicate_auth", "foreign_auth"}


def variant(name, names):
    """A derived enum's discriminant: the middle of variant i's u32 band."""
    i, n = names.index(name), len(names)
    return struct.pack("<I", ((2 * i + 1) << 32) // (2 * n))


def boolean(b):
    return bytes([1 if b else 0])


def option(value, encode):
    return boolean(False) if value is None else boolean(True) + encode(value)


def level(name):
    return variant(name, LEVELS)


def setup(join_rule="public", bob=None, federate=True):
    return variant(join_rule, JOIN_RULES) + option(bob, level) + bytes([1 if federate else 0])


# Kind is weighted by hand: a byte, modulo 16.
def create():
    return bytes([0])


def member(membership, target=None, displayname=False):
    t = option(target, lambda u: bytes([USERS.index(u)]))
    return bytes([1]) + t + variant(membership, MEMBERSHIPS) + boolean(displayname)


def power_levels(users=None, users_default=None, events_default=None, state_default=None, ban=None, kick=None,
                 invite=None, message=None, odd=None):
    users = users or {}
    out = bytes([8])
    for u in USERS:
        out += option(users.get(u), level)
    for v in [users_default, events_default, state_default, ban, kick, invite, message]:
        out += option(v, level)
    return out + option(odd, lambda o: variant(o, ODD))


def join_rules(rule):
    return bytes([10]) + variant(rule, JOIN_RULES)


def message(body=0, use_float=False):
    return bytes([11, body]) + boolean(use_float)


def topic(key):
    return bytes([15, key])


def op(sender, kind, breakage=None, arg=0, ts_step=1):
    out = bytes([USERS.index(sender)]) + kind + bytes([ts_step])
    if breakage is None:
        return out + bytes([255]) + variant("no_prev", BREAKAGES)
    out += bytes([0]) + variant(breakage, BREAKAGES)
    return out + (bytes([arg]) if breakage in BREAKAGES_WITH_BYTE else b"")


SEEDS = {
    # Strangers join a public room, talk, are given power, kicked, banned.
    "public-room": setup("public", bob="fifty") + b"".join([
        op("bob", member("join")),
        op("bob", message(1)),
        op("carol", member("join", displayname=True)),
        op("carol", message(2, use_float=True)),
        op("dave", member("join")),
        op("dave", message(3), breakage="stale_prev", arg=1),
        op("alice", power_levels({"alice": "hundred", "bob": "fifty", "carol": "zero"}, kick="fifty")),
        op("bob", member("leave", target="carol")),
        op("carol", message(4)),
        op("carol", member("join")),
        op("bob", member("ban", target="dave")),
        op("dave", member("join")),
        op("alice", member("leave", target="dave")),
        op("dave", member("join"), breakage="drop_auth", arg=2),
        op("dave", member("join")),
        op("bob", topic(0)),
        op("carol", topic(1)),
        op("bob", member("leave")),
        op("alice", create()),
    ]),
    # Invitations, then knocking.
    "invite-and-knock": setup("invite") + b"".join([
        op("bob", member("join")),
        op("alice", member("invite", target="bob")),
        op("bob", member("join"), breakage="foreign_auth", arg=0),
        op("bob", member("join")),
        op("bob", member("invite", target="carol")),
        op("carol", member("leave")),
        op("bob", member("invite", target="carol")),
        op("carol", member("join")),
        op("alice", join_rules("knock")),
        op("dave", member("knock")),
        op("dave", member("knock"), breakage="duplicate_auth", arg=1),
        op("alice", member("invite", target="dave")),
        op("dave", member("join")),
        op("dave", message(9)),
        op("alice", join_rules("restricted")),
        op("bob", member("leave")),
        op("bob", member("join")),
        op("alice", join_rules("not_a_string")),
    ]),
    # Power level changes, good and bad.
    "power-levels": setup("public", bob="hundred") + b"".join([
        op("bob", member("join")),
        op("carol", member("join")),
        op("alice", power_levels({"alice": "hundred", "bob": "fifty", "carol": "fifty"}, state_default="fifty",
                                 ban="hundred", invite="fifty", message="zero")),
        op("bob", power_levels({"alice": "hundred", "bob": "fifty", "carol": "zero"})),
        op("bob", power_levels({"alice": "hundred", "bob": "fifty", "carol": "fifty"}, events_default="fifty")),
        op("carol", message(5)),
        op("alice", power_levels({"alice": "hundred", "bob": "above_creator"})),
        op("alice", power_levels({"alice": "hundred"}, odd="string_level")),
        op("alice", power_levels({"alice": "hundred"}, odd="non_lm_user")),
        op("alice", power_levels({"alice": "hundred"}, odd="float_level")),
        op("alice", power_levels({"alice": "hundred"}, odd="notifications"), breakage="no_prev"),
        op("alice", power_levels({"alice": "hundred"}, odd="users_not_a_map")),
        op("alice", power_levels({"alice": "zero"}, users_default="negative")),
        op("alice", message(6), breakage="double_prev"),
        op("alice", message(6)),
        op("bob", topic(2)),
    ]),
    # A room that does not federate: the participant's users stay out.
    "no-federation": setup("public", federate=False) + b"".join([
        op("bob", member("join")),
        op("dave", member("join")),
        op("dave", message(7)),
        op("alice", member("invite", target="carol")),
        op("alice", message(8), breakage="unknown_prev"),
        op("alice", message(8)),
    ]),
}

# Unscripted histories: fixed pseudo-random bytes (about 20 and 64 operations).
rng = random.Random(20240611)
for name, n in [("random-medium", 256), ("random-long", 1024)]:
    SEEDS[name] = bytes(rng.randrange(256) for _ in range(n))

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "room_sequence")
os.makedirs(here, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(here, name + ".bin"), "wb") as f:
        f.write(data)
    print(f"{name}.bin: {len(data)} bytes")
