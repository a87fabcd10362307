// The end-to-end encryption scenario, driven by matrix-js-sdk with its Rust
// crypto (in memory, no IndexedDB): alice on the hub and bob on the follower
// make a megolm room, each decrypts what the other sends, alice logs in a
// second device that decrypts bob's next message (keys upload, query and
// claim, room keys over to-device, device_lists changes), and a custom
// to-device message from bob reaches alice's first device exactly once, even
// when bob's client retries the request with the same transaction id.
// Then:
// - cross-signing: alice's first device bootstraps her cross-signing keys
//   (keys/device_signing/upload, with her password) and signs her second
//   device (keys/signatures/upload), which bob's client then sees signed by
//   its owner; bob bootstraps his keys and signs alice's master key with his
//   user-signing key, after which his client holds her identity, and her
//   second device, verified;
// - a blocked device: alice sends only to verified devices, with bob's first
//   device verified locally and his new second device not: the first
//   decrypts, the second is told the key was withheld and still cannot
//   decrypt after 10 s;
// - key backup: alice's first device makes a backup version
//   (room_keys/version) and uploads her room keys (room_keys/keys); a third
//   device, logged in afterwards, is handed the backup's decryption key,
//   restores the backup and decrypts alice's first message.
// Environment: LMX_HUB_URL, LMX_FOLLOWER_URL (may be the same server),
// LMX_NAME_SUFFIX, and LMX_DEBUG=1 for the SDK's and the crypto library's
// logs on stderr. LMX_ROOM_VERSION makes the room of that version (a mixed
// room, for a follower URL that is a Synapse). LMX_PAUSE is not supported:
// stopping a client drops its in-memory crypto store, so the script exits
// non-zero if it is set.
// Prints progress lines and then OK.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import * as RustSdkCryptoJs from "@matrix-org/matrix-sdk-crypto-wasm";
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
// Whether bob's sync is trusted to list alice in device_lists.changed
// after he signs her master key (see `crossSigning`).

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

// Answers the user-interactive authentication of
// keys/device_signing/upload with the user's password.
const withPassword = (name) => async (makeRequest) => {
  await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: name }, password: PASSWORD });
};

// `userId`'s cross-signing identity as `client`'s crypto stores it, read
// from the Rust OlmMachine behind the CryptoApi (a field that is private in
// TypeScript): the public API has no way to read another user's master key
// or to sign it with one's user-signing key.
async function identity(client, userId) {
  return client.getCrypto().olmMachine.getIdentity(new RustSdkCryptoJs.UserId(userId));
}

async function masterKeyOf(client, userId) {
  const id = await identity(client, userId);
  if (!id) return null;
  try {
    return Object.values(JSON.parse(id.masterKey).keys ?? {})[0] ?? null;
  } finally {
    id.free();
  }
}

// A device's verification status as `client` sees it, for failure messages.
async function deviceStatus(client, userId, deviceId) {
  const s = await client.getCrypto().getDeviceVerificationStatus(userId, deviceId);
  return s
    ? `  ${userId}/${deviceId}: signedByOwner=${s.signedByOwner} crossSigningVerified=${s.crossSigningVerified} localVerified=${s.localVerified}`
    : `  ${userId}/${deviceId}: unknown to ${tag(client)}`;
}

// Cross-signing: alice's first device makes her master, self-signing and
// user-signing keys and signs her second device with the self-signing key;
// bob, on the other server, sees the signature once alice's device list
// changes. Bob makes his own keys, sees alice's master key, and signs it
// with his user-signing key (keys/signatures/upload), after which his
// client holds alice's identity verified.
async function crossSigning({ alice, alice2, bob, aliceName, bobName }) {
  const aliceId = alice.getUserId();
  const bobId = bob.getUserId();
  await alice.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: withPassword(aliceName) });
  check(await alice.getCrypto().isCrossSigningReady(), `cross-signing ready on ${tag(alice)} after bootstrapping`);
  const aliceMaster = await alice.getCrypto().getCrossSigningKeyId("master");
  check(aliceMaster, `${tag(alice)} has a master key id`);
  say(`${tag(alice)} bootstrapped cross-signing`);

  await knowsDevice(alice, aliceId, "ALICE2");
  await alice.getCrypto().setDeviceVerified(aliceId, "ALICE2", true);
  await alice.getCrypto().crossSignDevice("ALICE2");
  // Bob tracks alice (they share a room): his client queries her keys
  // again when she appears in his sync's device_lists.changed.
  const bobSees = async () => ({
    master: await masterKeyOf(bob, aliceId),
    alice2: await bob.getCrypto().getDeviceVerificationStatus(aliceId, "ALICE2"),
  });
  await until(
    `${tag(bob)} see ALICE2 signed by alice's self-signing key`,
    async () => {
      await bob.getCrypto().getUserDeviceInfo([aliceId], true);
      const seen = await bobSees();
      return seen.master === aliceMaster && seen.alice2?.signedByOwner === true;
    },
    async () =>
      `  alice's master key: ${(await bobSees()).master ?? "(none)"}, expected ${aliceMaster}\n` +
      (await deviceStatus(bob, aliceId, "ALICE2")),
  );
  await until(
    `${tag(alice2)} see itself signed by its owner`,
    async () => (await alice2.getCrypto().getDeviceVerificationStatus(aliceId, "ALICE2"))?.signedByOwner === true,
    () => deviceStatus(alice2, aliceId, "ALICE2"),
  );
  check(await bob.getCrypto().userHasCrossSigningKeys(aliceId), `${tag(bob)} holds alice's cross-signing keys`);
  const before = await bob.getCrypto().getUserVerificationStatus(aliceId);
  check(!before.isCrossSigningVerified(), `${tag(bob)} does not yet hold alice verified`);
  say(`${tag(bob)} sees ALICE2 cross-signed by alice's master key ${aliceMaster}`);

  await bob.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: withPassword(bobName) });
  check(await bob.getCrypto().isCrossSigningReady(), `cross-signing ready on ${tag(bob)} after bootstrapping`);
  const bobMaster = await bob.getCrypto().getCrossSigningKeyId("master");
  await until(`${tag(alice)} see bob's master key`, async () => (await masterKeyOf(alice, bobId)) === bobMaster, async () =>
    `  bob's master key: ${(await masterKeyOf(alice, bobId)) ?? "(none)"}, expected ${bobMaster}`,
  );
  const aliceIdentity = await identity(bob, aliceId);
  try {
    const upload = await aliceIdentity.verify();
    await bob.getCrypto().outgoingRequestProcessor.makeOutgoingRequest(upload);
  } finally {
    aliceIdentity.free();
  }
  // Bob's client trusts the signature once it reads it back from
  // keys/query, which it does when his sync lists alice in
  // device_lists.changed (the server tells the signer's devices).
  const aliceStatus = () => bob.getCrypto().getUserVerificationStatus(aliceId);
  await until(
    `${tag(bob)} hold alice's identity verified`,
    async () => (await aliceStatus()).isCrossSigningVerified(),
    async () => {
      const s = await aliceStatus();
      return `  crossSigningVerified=${s.isCrossSigningVerified()} wasCrossSigningVerified=${s.wasCrossSigningVerified()} needsUserApproval=${s.needsUserApproval}`;
    },
  );
  await until(
    `${tag(bob)} hold ALICE2 verified through cross-signing`,
    async () => (await bob.getCrypto().getDeviceVerificationStatus(aliceId, "ALICE2"))?.crossSigningVerified === true,
    () => deviceStatus(bob, aliceId, "ALICE2"),
  );
  say(`${tag(bob)} signed alice's master key and holds her identity and ALICE2 verified`);
}

// A device alice blocks gets no room key: with unverified devices
// blacklisted and only BOB1 verified (locally), bob's new device BOB2
// stays unable to decrypt her message while BOB1 reads it.
async function blockedDevice({ alice, bob, bobName, room }) {
  const bobId = bob.getUserId();
  const bob2 = await device(FOLLOWER, bobName, "BOB2");
  await knowsDevice(alice, bobId, "BOB2");
  await until(`${tag(bob2)} in the encrypted room`, () => bob2.getRoom(room)?.getMyMembership() === "join" && bob2.getRoom(room).hasEncryptionStateEvent());
  const crypto = alice.getCrypto();
  crypto.globalBlacklistUnverifiedDevices = true;
  await crypto.setDeviceVerified(bobId, "BOB1", true);
  check((await crypto.getDeviceVerificationStatus(bobId, "BOB1"))?.isVerified(), `${tag(alice)} holds BOB1 verified`);
  const bob2Status = await crypto.getDeviceVerificationStatus(bobId, "BOB2");
  check(bob2Status && !bob2Status.isVerified(), `${tag(alice)} holds BOB2 unverified:\n${await deviceStatus(alice, bobId, "BOB2")}`);
  const body = "secret for verified devices only";
  // The send's answer names the event: alice's own timeline shows it only
  // after her next sync (pending events are detached), which may come
  // after bob has decrypted it.
  const { event_id: eventId } = await alice.sendMessage(room, { msgtype: "m.text", body });
  check(eventId, `${tag(alice)} got an event id for its message`);
  await waitDecrypted(bob, room, body);
  say(`${tag(bob)} decrypted a message sent to verified devices only`);

  // BOB2 gets the event but not its key: it stays a decryption failure.
  const atBob2 = () => live(bob2, room).find((e) => e.getId() === eventId);
  await until(`${tag(bob2)} receive the event ${eventId}`, () => atBob2() && !atBob2().isBeingDecrypted(), () => timeline(bob2, room));
  await sleep(10000);
  check(atBob2().isDecryptionFailure(), `${tag(bob2)} still cannot decrypt ${eventId} after 10 s:\n${timeline(bob2, room)}`);
  // Alice's client told BOB2 why (m.room_key.withheld, code m.unverified).
  check(
    atBob2().decryptionFailureReason === "MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE",
    `${tag(bob2)} learnt the key was withheld from it as unverified:\n${timeline(bob2, room)}`,
  );
  crypto.globalBlacklistUnverifiedDevices = false;
  say(`${tag(bob2)}, unverified, still cannot decrypt it after 10 s: the key was withheld from it`);
  return bob2;
}

// `client`'s own request to its server, for what the SDK does not show.
async function api(client, method, path) {
  const res = await fetch(`${client.getHomeserverUrl()}/_matrix/client/v3/${path}`, {
    method,
    headers: { Authorization: `Bearer ${client.getAccessToken()}` },
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

// Key backup: alice's first device makes a backup version and uploads her
// room keys; a third device, which logs in after the messages, gets the
// backup's decryption key from the first, restores the backup and
// decrypts alice's first message, which it never got a key for.
async function keyBackup({ alice, aliceName, room }) {
  const crypto = alice.getCrypto();
  await crypto.resetKeyBackup();
  // resetKeyBackup starts backing up without waiting for it: check the
  // new version now, which the client trusts (alice's master key and
  // device signed it) and backs up to.
  const checked = await crypto.checkKeyBackupAndEnable();
  check(checked?.backupInfo?.version, `${tag(alice)} finds the new backup version (got ${JSON.stringify(checked?.backupInfo)})`);
  check(checked.trustInfo.trusted, `${tag(alice)} trusts its backup (${JSON.stringify(checked.trustInfo)})`);
  const version = checked.backupInfo.version;
  let active = null;
  await until(
    `${tag(alice)} back up to version ${version}`,
    async () => (active = await crypto.getActiveSessionBackupVersion()) === version,
    () => `  active version: ${active}`,
  );
  const key = await crypto.getSessionBackupPrivateKey();
  check(key, `${tag(alice)} holds the backup's decryption key`);
  // The session of alice's first message, stored in the backup.
  const first = live(alice, room).find((e) => e.getType() === "m.room.message" && e.getContent().body === "secret from alice");
  check(first, `${tag(alice)} has "secret from alice" in its timeline`);
  const session = first.getWireContent().session_id;
  const enc = encodeURIComponent;
  let info = null;
  let stored = null;
  await until(
    `the session ${session} in backup version ${version}`,
    async () => {
      info = await api(alice, "GET", `room_keys/version/${enc(version)}`);
      stored = await api(alice, "GET", `room_keys/keys/${enc(room)}/${enc(session)}?version=${enc(version)}`);
      return info.status === 200 && info.body?.count > 0 && stored.status === 200;
    },
    () =>
      `  GET room_keys/version/${version}: ${info?.status} ${JSON.stringify(info?.body)}\n` +
      `  GET room_keys/keys/…/${session}: ${stored?.status} ${JSON.stringify(stored?.body)}`,
  );
  say(`${tag(alice)} backed up ${info.body.count} room keys in version ${version}`);

  const alice3 = await device(HUB, aliceName, "ALICE3");
  await until(
    `${tag(alice3)} in the room with "secret from alice"`,
    () => alice3.getRoom(room)?.hasEncryptionStateEvent() && live(alice3, room).some((e) => e.getId() === first.getId()),
    () => timeline(alice3, room),
  );
  check(!decrypted(alice3, room, "secret from alice"), `${tag(alice3)} cannot decrypt "secret from alice" before restoring the backup`);
  await alice3.getCrypto().storeSessionBackupPrivateKey(key, version);
  const restored = await alice3.getCrypto().restoreKeyBackup();
  check(restored.imported > 0, `${tag(alice3)} restored keys from the backup (total ${restored.total}, imported ${restored.imported})`);
  await waitDecrypted(alice3, room, "secret from alice");
  say(`${tag(alice3)} restored ${restored.imported} of ${restored.total} keys and decrypted "secret from alice"`);
  return alice3;
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
    ...(process.env.LMX_ROOM_VERSION ? { room_version: process.env.LMX_ROOM_VERSION } : {}),
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

  await crossSigning({ alice, alice2, bob, aliceName, bobName });
  const bob2 = await blockedDevice({ alice, bob, bobName, room });
  clients.push(bob2);
  clients.push(await keyBackup({ alice, aliceName, room }));

  clients.forEach((c) => c.stopClient());
  say("OK");
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`${e?.stack ?? e}\n`);
  process.exit(1);
});
