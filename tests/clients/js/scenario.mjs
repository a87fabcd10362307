// The chat scenario of tests/real_clients.rs, driven by matrix-js-sdk with
// its own sync loop: two users on an lmx hub and an lmx follower make a DM
// and a group room, send text, an edit, a reaction, a reply and a
// redaction, set a topic, page history back past the follower's cache, see
// typing and a read receipt, and leave. Environment as for the nio script.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import readline from "node:readline";

const { createClient, ClientEvent, Preset, Visibility, Direction } = sdk;
const HUB = process.env.LMX_HUB_URL;
const FOLLOWER = process.env.LMX_FOLLOWER_URL;
const SUFFIX = process.env.LMX_NAME_SUFFIX ?? "";
const PAUSE = process.env.LMX_PAUSE === "1";
const PASSWORD = "correct horse battery";

// The SDK logs a lot on stdout, which carries this script's protocol.
logger.setLevel("silent");

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, pred, timeout = 30000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await sleep(100);
  }
  throw new Error(`never saw ${what}`);
}

async function account(baseUrl, name) {
  const anon = createClient({ baseUrl });
  await anon.registerRequest({ username: name, password: PASSWORD, auth: { type: "m.login.dummy" } });
  const login = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: name },
    password: PASSWORD,
  });
  const client = createClient({ baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
  await start(client);
  return client;
}

async function start(client) {
  const prepared = new Promise((resolve) => {
    client.on(ClientEvent.Sync, (state) => {
      if (state === "PREPARED" || state === "SYNCING") resolve();
    });
  });
  // Detached pending events: the live timeline shows the server's order,
  // not the order this client happened to send in.
  await client.startClient({ initialSyncLimit: 100, lazyLoadMembers: false, pendingEventOrdering: "detached" });
  await prepared;
}

const live = (client, roomId) => client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
const messages = (events) => events.filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body);

async function pause(clients) {
  clients.forEach((c) => c.stopClient());
  console.log("PAUSE");
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.once("line", resolve));
  rl.close();
  for (const c of clients) await start(c);
}

async function main() {
  const alice = await account(HUB, `jalice${SUFFIX}`);
  const bob = await account(FOLLOWER, `jbob${SUFFIX}`);

  const { room_id: dm } = await alice.createRoom({ is_direct: true, invite: [bob.getUserId()], preset: Preset.TrustedPrivateChat });
  const { room_id: group } = await alice.createRoom({
    visibility: Visibility.Private,
    name: `js group ${SUFFIX}`,
    topic: "start",
    invite: [bob.getUserId()],
  });
  await until("both invites", () => [dm, group].every((r) => bob.getRoom(r)?.getMyMembership() === "invite"));
  await bob.joinRoom(dm);
  await bob.joinRoom(group);
  await until("bob joined", () => [dm, group].every((r) => alice.getRoom(r)?.getMember(bob.getUserId())?.membership === "join"));

  await alice.sendMessage(dm, { msgtype: "m.text", body: "hi bob" });
  await bob.sendMessage(dm, { msgtype: "m.text", body: "hi alice" });
  await until("the DM", () => messages(live(alice, dm)).includes("hi alice") && messages(live(bob, dm)).includes("hi bob"));

  const { event_id: hello } = await alice.sendMessage(group, { msgtype: "m.text", body: "hello" });
  await alice.sendMessage(group, {
    msgtype: "m.text",
    body: "* hello, all",
    "m.new_content": { msgtype: "m.text", body: "hello, all" },
    "m.relates_to": { rel_type: "m.replace", event_id: hello },
  });
  await bob.sendEvent(group, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: hello, key: "👍" } });
  await bob.sendMessage(group, { msgtype: "m.text", body: "> hello\n\nreply", "m.relates_to": { "m.in_reply_to": { event_id: hello } } });
  const { event_id: oops } = await bob.sendMessage(group, { msgtype: "m.text", body: "oops" });
  await bob.redactEvent(group, oops, undefined, { reason: "typo" });
  await alice.setRoomTopic(group, "lm interop");

  if (PAUSE) await pause([alice, bob]);

  const sent = Array.from({ length: 45 }, (_, i) => `j${i}`);
  for (const [i, body] of sent.entries()) {
    await (i % 3 ? alice : bob).sendMessage(group, { msgtype: "m.text", body });
  }
  await until("the last message", () => messages(live(bob, group)).includes("j44") && messages(live(alice, group)).includes("j44"));
  const tail = (c) => live(c, group).filter((e) => e.getId()?.startsWith("$")).map((e) => `${e.getContent().body} ${e.getId().slice(0,8)}`).slice(-40);
  const [ta, tb] = [tail(alice), tail(bob)];
  check(JSON.stringify(ta) === JSON.stringify(tb), `both clients see the same events in order:\n${ta.join("\n")}\n--\n${tb.join("\n")}`);

  // Typing and a read receipt cross servers.
  await bob.sendTyping(group, true, 10000);
  await until("bob typing", () => alice.getRoom(group)?.getMember(bob.getUserId())?.typing === true);
  const lastBob = live(alice, group).filter((e) => e.getSender() === bob.getUserId()).at(-1);
  await alice.sendReadReceipt(lastBob);
  // The SDK also synthesizes receipts from senders' own messages; ask for
  // the real one.
  await until("alice's receipt", () =>
    bob.getRoom(group)?.getReadReceiptForUserId(alice.getUserId(), true)?.eventId === lastBob.getId());

  // Paging back past the follower's cache, to the room's creation.
  const history = async (client) => {
    const seen = [];
    let from = null;
    for (let n = 0; n < 60; n++) {
      const page = await client.createMessagesRequest(group, from, 20, Direction.Backward);
      seen.push(...page.chunk);
      if (!page.end || page.chunk.length === 0) break;
      from = page.end;
    }
    return seen;
  };
  const seen = await history(bob);
  check(seen.at(-1).type === "m.room.create", "history reaches the create event");
  const bodies = seen.filter((e) => e.type === "m.room.message").map((e) => e.content.body).reverse();
  check(JSON.stringify(bodies.slice(-45)) === JSON.stringify(sent), "history holds every message in order");
  const edit = seen.find((e) => e.content["m.relates_to"]?.rel_type === "m.replace");
  check(edit?.content["m.new_content"].body === "hello, all", "the edit");
  check(seen.find((e) => e.type === "m.reaction")?.content["m.relates_to"].key === "👍", "the reaction");
  check(seen.find((e) => e.content["m.relates_to"]?.["m.in_reply_to"])?.content["m.relates_to"]["m.in_reply_to"].event_id === hello, "the reply");
  check(JSON.stringify(seen.find((e) => e.event_id === oops)?.content) === "{}", "the redacted message has no content");
  check(seen.find((e) => e.type === "m.room.topic").content.topic === "lm interop", "newest topic first");
  const fromHub = await history(alice);
  check(JSON.stringify(fromHub.map((e) => e.event_id)) === JSON.stringify(seen.map((e) => e.event_id)), "hub and follower histories agree");

  await bob.leave(group);
  await until("bob's leave", () => alice.getRoom(group)?.getMember(bob.getUserId())?.membership === "leave");
  alice.stopClient();
  bob.stopClient();
  console.log("OK");
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
