// The end-to-end encryption scenario, driven by matrix-js-sdk with its Rust
// crypto (in memory, no IndexedDB): alice on the hub and bob on the follower
// make a megolm room, each decrypts what the other sends, alice logs in a
// second device that decrypts bob's next message (keys upload, query and
// claim, room keys over to-device, device_lists changes), and a custom
// to-device message from bob reaches alice's first device exactly once, even
// when bob's client retries the request with the same transaction id.
// Environment: LMX_HUB_URL, LMX_FOLLOWER_URL (may be the same server),
// LMX_NAME_SUFFIX, and LMX_DEBUG=1 for the SDK's and the crypto library's
// logs on stderr. LMX_PAUSE is not supported: stopping a client drops its
// in-memory crypto store, so the script exits non-zero if it is set.
// Prints progress lines and then OK.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { randomUUID } from "node:crypto";
import { format } from "node:util";

const { createClient, ClientEvent, Preset, Visibility } = sdk;
const HUB = process.env.LMX_HUB_URL;
const FOLLOWER = process.env.LMX_FOLLOWER_URL;
const SUFFIX = process.env.LMX_NAME_SUFFIX ?? "";
const DEBUG = process.env.LMX_DEBUG === "1";
const PASSWORD = "correct horse battery";
const MEGOLM = "m.megolm.v1.aes-sha2";
const WAIT = 60000;

// stdout carries this script's protocol. The SDK logs through its own
// logger; the crypto library's WebAssembly logs straight to console.debug
// and console.info, which Node writes to stdout. Both go to stderr (only
// with LMX_DEBUG), and progress is written through `say`.
const say = (line) => process.stdout.write(`${line}\n`);
const toStderr = (...args) => {
  if (DEBUG) process.stderr.write(`${format(...args)}\n`);
};
console.log = console.debug = console.info = console.trace = toStderr;
logger.setLevel(DEBUG ? "debug" : "silent");

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `pred` until it holds; on timeout the error carries `detail()`,
// what the clients saw instead.
async function until(what, pred, detail = () => "", timeout = WAIT) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await sleep(100);
  }
  const seen = await detail();
  throw new Error(`never saw ${what} within ${timeout / 1000} s${seen ? `; saw:\n${seen}` : ""}`);
}

// What a client received besides room events, for failure messages.
const received = new Map();

async function register(baseUrl, name) {
  const anon = createClient({ baseUrl });
  // No device for the registration itself: each device of the scenario
  // logs in with a fixed id and uploads keys.
  await anon.registerRequest({ username: name, password: PASSWORD, auth: { type: "m.login.dummy" }, inhibit_login: true });
}

// Logs in `name` as `deviceId` and starts a client with Rust crypto.
async function device(baseUrl, name, deviceId) {
  const anon = createClient({ baseUrl });
  const login = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: name },
    password: PASSWORD,
    device_id: deviceId,
    initial_device_display_name: `e2ee ${deviceId}`,
  });
  check(login.device_id === deviceId, `login keeps the requested device id ${deviceId} (got ${login.device_id})`);
  const client = createClient({ baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId });
  const seen = { toDevice: [], undecryptable: [], syncErrors: [] };
  received.set(client, seen);
  client.on(ClientEvent.ToDeviceEvent, (e) => seen.toDevice.push(e));
  client.on(ClientEvent.UndecryptableToDeviceEvent, (e) => seen.undecryptable.push(e));
  await client.initRustCrypto({ useIndexedDB: false });
  const prepared = new Promise((resolve) => {
    client.on(ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED" || state === "SYNCING") resolve();
      if (state === "ERROR") seen.syncErrors.push(String(data?.error ?? "sync error"));
    });
  });
  await client.startClient({ initialSyncLimit: 100, lazyLoadMembers: false, pendingEventOrdering: "detached" });
  await prepared;
  return client;
}

const tag = (client) => `${client.getUserId()}/${client.getDeviceId()}`;
const live = (client, roomId) => client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];

// The message `body` as `client` decrypted it: sent encrypted with megolm,
// decrypted without error.
const decrypted = (client, roomId, body) =>
  live(client, roomId).find(
    (e) =>
      e.isEncrypted() &&
      !e.isDecryptionFailure() &&
      e.getWireContent().algorithm === MEGOLM &&
      e.getType() === "m.room.message" &&
      e.getContent().body === body,
  );

// The messages of a room as `client` sees them, with decryption failures.
function timeline(client, roomId) {
  const lines = live(client, roomId)
    .filter((e) => e.isEncrypted() || e.getType() === "m.room.message")
    .map((e) => {
      let state = "plaintext";
      if (e.isDecryptionFailure()) state = `decryption failed: ${e.decryptionFailureReason}`;
      else if (e.isBeingDecrypted()) state = "being decrypted";
      else if (e.isEncrypted()) state = e.getClearContent() ? "decrypted" : "not decrypted yet";
      return `  ${e.getId()} ${e.getSender()} ${e.getType()} ${JSON.stringify(e.getContent().body)} [${state}]`;
    });
  const seen = received.get(client);
  const undecryptable = seen.undecryptable.map((e) => `  to-device from ${e.getSender()}: ${e.decryptionFailureReason ?? e.getContent().body}`);
  const errors = seen.syncErrors.map((e) => `  ${e}`);
  return [
    `${tag(client)} in ${roomId}:`,
    ...(lines.length ? lines : ["  (no messages)"]),
    ...(undecryptable.length ? ["undecryptable to-device messages:", ...undecryptable] : []),
    ...(errors.length ? ["sync errors:", ...errors] : []),
  ].join("\n");
}

async function waitDecrypted(client, roomId, body) {
  await until(`${tag(client)} decrypt ${JSON.stringify(body)}`, () => decrypted(client, roomId, body), () => timeline(client, roomId));
}

// Waits until `client`'s crypto knows `deviceId` of `userId`, which it
// learns through /keys/query (and, for a new device, device_lists).
async function knowsDevice(client, userId, deviceId) {
  const devices = async () => (await client.getCrypto().getUserDeviceInfo([userId], true)).get(userId) ?? new Map();
  await until(
    `${tag(client)} know ${userId}'s device ${deviceId}`,
    async () => (await devices()).has(deviceId),
    async () => `  devices: ${JSON.stringify([...(await devices()).keys()])}`,
  );
}

async function main() {
  check(HUB && FOLLOWER, "LMX_HUB_URL and LMX_FOLLOWER_URL are set");
  check(process.env.LMX_PAUSE !== "1", "LMX_PAUSE is not supported by the e2ee scenario (in-memory crypto stores)");
  const aliceName = `ealice${SUFFIX}`;
  const bobName = `ebob${SUFFIX}`;
  await register(HUB, aliceName);
  await register(FOLLOWER, bobName);
  const alice = await device(HUB, aliceName, "ALICE1");
  const bob = await device(FOLLOWER, bobName, "BOB1");
  const [aliceId, bobId] = [alice.getUserId(), bob.getUserId()];
  say(`started ${tag(alice)} and ${tag(bob)} with ${alice.getCrypto().getVersion()}`);
  const clients = [alice, bob];

  // Each side's crypto sees the other's device keys.
  await knowsDevice(alice, bobId, "BOB1");
  await knowsDevice(bob, aliceId, "ALICE1");

  const { room_id: room } = await alice.createRoom({
    visibility: Visibility.Private,
    preset: Preset.PrivateChat,
    name: `js e2ee ${SUFFIX}`,
    invite: [bobId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
  });
  await until("bob's invite", () => bob.getRoom(room)?.getMyMembership() === "invite");
  await bob.joinRoom(room);
  const joined = (c, userId) => c.getRoom(room)?.getMember(userId)?.membership === "join";
  await until("both joined, as both see it", () => clients.every((c) => joined(c, aliceId) && joined(c, bobId)));
  // A client that does not know the room is encrypted would send in clear.
  await until("the room encrypted for both", async () =>
    (await Promise.all(clients.map(async (c) => c.getRoom(room)?.hasEncryptionStateEvent() && (await c.getCrypto().isEncryptionEnabledInRoom(room))))).every(Boolean),
  );
  say(`room ${room} is encrypted and both joined`);

  await alice.sendMessage(room, { msgtype: "m.text", body: "secret from alice" });
  await waitDecrypted(bob, room, "secret from alice");
  say("bob decrypted alice's message");

  await bob.sendMessage(room, { msgtype: "m.text", body: "secret from bob" });
  await waitDecrypted(alice, room, "secret from bob");
  say("alice decrypted bob's reply");

  // A second device of alice's: bob learns of it through device_lists and
  // /keys/query, claims a one-time key, and shares the room key with it.
  const alice2 = await device(HUB, aliceName, "ALICE2");
  clients.push(alice2);
  await knowsDevice(bob, aliceId, "ALICE2");
  await until("alice's second device in the room", () => joined(alice2, bobId) && alice2.getRoom(room)?.hasEncryptionStateEvent());
  say(`bob knows ${tag(alice2)}`);
  await bob.sendMessage(room, { msgtype: "m.text", body: "secret for both of alice's devices" });
  await waitDecrypted(alice2, room, "secret for both of alice's devices");
  await waitDecrypted(alice, room, "secret for both of alice's devices");
  say("alice's second device decrypted bob's message");

  // A custom to-device message to alice's first device, sent twice with
  // one transaction id (a client's retry), then a marker: to-device
  // messages arrive in order, so once the marker is there any duplicate
  // of the ping would be too.
  const ping = "org.example.ping";
  const nonce = randomUUID();
  const marker = randomUUID();
  const to = (content) => new Map([[aliceId, new Map([["ALICE1", content]])]]);
  const txn = `ping-${nonce}`;
  await bob.sendToDevice(ping, to({ nonce }), txn);
  await bob.sendToDevice(ping, to({ nonce }), txn);
  await bob.sendToDevice(ping, to({ nonce: marker }), `ping-${marker}`);
  const pings = (client, n) =>
    received.get(client).toDevice.filter((e) => e.getType() === ping && e.getSender() === bobId && e.getContent().nonce === n);
  const toDeviceSeen = (client) =>
    received.get(client).toDevice.map((e) => `  ${e.getType()} from ${e.getSender()}: ${JSON.stringify(e.getContent())}`).join("\n") ||
    "  (no to-device messages)";
  await until("the to-device marker at alice's first device", () => pings(alice, marker).length === 1, () => toDeviceSeen(alice));
  check(pings(alice, nonce).length === 1, `the ping arrived exactly once at ${tag(alice)}, not ${pings(alice, nonce).length} times:\n${toDeviceSeen(alice)}`);
  check(pings(alice2, nonce).length === 0 && pings(alice2, marker).length === 0, `the pings were only for ALICE1, yet ${tag(alice2)} saw:\n${toDeviceSeen(alice2)}`);
  say("the to-device ping arrived exactly once");

  clients.forEach((c) => c.stopClient());
  say("OK");
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`${e?.stack ?? e}\n`);
  process.exit(1);
});
