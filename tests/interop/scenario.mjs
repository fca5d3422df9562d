// Three users of OpenIM's official JS SDK (@openim/client-sdk, under Node with `ws`) chatting through
// our gateway. Single chat, A and B: both ways, each user's gateway restarted in turn (missed
// messages come back through the SDK's own reconnect pulls), history, mark as read. Group chat, A, B
// and C: A creates the group with the SDK's createGroup, everyone sees it and its conversation, all
// three send, the gateways restart again, history, mark as read.
//
// Configuration (environment):
//   OPENIM_A_USER, OPENIM_A_TOKEN, OPENIM_A_WS, OPENIM_A_API   user A and the gateway it uses
//   OPENIM_B_USER, OPENIM_B_TOKEN, OPENIM_B_WS, OPENIM_B_API   user B (may be another gateway)
//   OPENIM_C_USER, OPENIM_C_TOKEN, OPENIM_C_WS, OPENIM_C_API   user C (on B's gateway: "stop-B" stops both)
//   OPENIM_GROUP_NAME                                          the group's name
//   OPENIM_PLATFORM (5, Web), OPENIM_STEP_TIMEOUT_MS (60000), OPENIM_SDK_LOG_LEVEL (3: warn, to stderr),
//   OPENIM_SDK_BUILD (main: the package's ES5 build instead of lib/index.modern.mjs, see below)
//
// Output: one JSON object per line on stdout, each with an `ev` field:
//   sdk-event {user, name, errCode}   connection and sync events
//   sent {user, msg}                  a message this user sent (after the server's answer)
//   recv {user, msgs}                 OnRecvNewMessages
//   receipt {user, receipts}          OnRecvC2CReadReceipt
//   history {user, conversationID, page, msgs, isEnd}
//                                     getAdvancedHistoryMessageList pages (newest page first)
//   state {user, label, conversation, totalUnread}
//   group-created {user, group}       createGroup's answer
//   groups {user, groups, isJoinGroup} getJoinedGroupListPage, isJoinGroup
//   members {user, members}           getSpecifiedGroupMembersInfo of the three users
//   await {step, ...}                 the script waits for a line "ok <step>" on stdin:
//     stop-A / stop-B                 kill that user's gateway
//     start-A / start-B {conversationID, wantMaxSeq}
//                                     start it again (once the conversation's max seq is wantMaxSeq)
//   error {where, message}, done {ok}
// The SDK's own console output goes to stderr.

import readline from "node:readline";
import WS from "ws";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
for (const name of ["log", "info", "debug", "warn", "trace"]) {
  console[name] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

// The SDK picks `new WebSocket(url)` when a global WebSocket exists, and reads binary frames as
// ArrayBuffer (it calls .arrayBuffer() on anything else, which Node's Buffer lacks).
class NodeWebSocket extends WS {
  constructor(url, protocols) {
    super(url, protocols);
    this.binaryType = "arraybuffer";
  }
}
globalThis.WebSocket = NodeWebSocket;

// The package's ES5 builds (lib/index.js, its "main"; lib/index.es.js, its "module"; the UMD) compile
// `[...map.entries()]` into `[].concat(map.entries())`, so the SDK's reconnect pull throws before
// sending 1002. Its ES2017 build of the same version, lib/index.modern.mjs, is correct: use it
// (OPENIM_SDK_BUILD=main shows the bug).
const build = process.env.OPENIM_SDK_BUILD === "main" ? "@openim/client-sdk" : "@openim/client-sdk/lib/index.modern.mjs";
const { getSDK, CbEvents } = await import(build);

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const PLATFORM = Number(env("OPENIM_PLATFORM", "5"));
const STEP_TIMEOUT_MS = Number(env("OPENIM_STEP_TIMEOUT_MS", "60000"));
const LOG_LEVEL = Number(env("OPENIM_SDK_LOG_LEVEL", "3"));

process.on("unhandledRejection", (reason) => {
  out({ ev: "error", where: "unhandledRejection", message: String(reason?.stack ?? reason) });
});

// --- stdin control channel -------------------------------------------------------------------

const acks = [];
const waiters = [];
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  acks.push(line.trim());
  waiters.splice(0).forEach((wake) => wake());
});

async function control(step, extra = {}) {
  out({ ev: "await", step, ...extra });
  const want = `ok ${step}`;
  const deadline = Date.now() + 5 * STEP_TIMEOUT_MS;
  while (!acks.includes(want)) {
    if (Date.now() > deadline) throw new Error(`no "${want}" on stdin`);
    await new Promise((wake) => {
      waiters.push(wake);
      setTimeout(wake, 500);
    });
  }
  acks.splice(acks.indexOf(want), 1);
}

async function until(what, check) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((wake) => setTimeout(wake, 50));
  }
}

// --- one SDK user ----------------------------------------------------------------------------

const summary = (m) => ({
  clientMsgID: m.clientMsgID,
  serverMsgID: m.serverMsgID,
  sendID: m.sendID,
  recvID: m.recvID,
  groupID: m.groupID ?? "",
  seq: m.seq,
  sessionType: m.sessionType,
  contentType: m.contentType,
  msgFrom: m.msgFrom,
  text: m.textElem?.content ?? null,
  tips: m.notificationElem?.detail ? JSON.parse(m.notificationElem.detail) : null,
  senderNickname: m.senderNickname ?? "",
  sendTime: m.sendTime,
});

const groupSummary = (g) => ({
  groupID: g.groupID,
  groupName: g.groupName,
  ownerUserID: g.ownerUserID,
  creatorUserID: g.creatorUserID,
  memberCount: g.memberCount,
  status: g.status,
});

function makeUser(name) {
  const sdk = getSDK();
  const user = {
    name,
    sdk,
    userID: env(`OPENIM_${name}_USER`),
    token: env(`OPENIM_${name}_TOKEN`),
    wsAddr: env(`OPENIM_${name}_WS`),
    apiAddr: env(`OPENIM_${name}_API`),
    events: [],
    received: [],
  };
  const lifecycle = [
    "OnConnecting",
    "OnConnectSuccess",
    "OnConnectFailed",
    "OnKickedOffline",
    "OnUserTokenExpired",
    "OnUserTokenInvalid",
    "OnSyncServerStart",
    "OnSyncServerFinish",
    "OnSyncServerFailed",
  ];
  for (const event of lifecycle) {
    sdk.on(CbEvents[event], (e) => {
      user.events.push(event);
      out({ ev: "sdk-event", user: name, name: event, errCode: e.errCode, errMsg: e.errMsg });
    });
  }
  sdk.on(CbEvents.OnRecvNewMessages, ({ data }) => {
    const msgs = data.map(summary);
    user.received.push(...msgs);
    out({ ev: "recv", user: name, msgs });
  });
  // group events (from group notifications, and from the sync after a reconnect)
  user.joinedGroups = [];
  for (const event of ["OnJoinedGroupAdded", "OnJoinedGroupDeleted", "OnGroupMemberAdded", "OnGroupMemberDeleted"]) {
    sdk.on(CbEvents[event], ({ data }) => {
      if (event === "OnJoinedGroupAdded") user.joinedGroups.push(data.groupID);
      out({ ev: "sdk-event", user: name, name: event, groupID: data?.groupID, userID: data?.userID });
    });
  }
  user.receipts = [];
  sdk.on(CbEvents.OnRecvC2CReadReceipt, ({ data }) => {
    user.receipts.push(...data);
    out({ ev: "receipt", user: name, receipts: data });
  });
  return user;
}

const count = (user, event) => user.events.filter((e) => e === event).length;

async function call(user, what, promise) {
  try {
    return (await promise).data;
  } catch (err) {
    throw new Error(`${user.name} ${what}: ${err?.errCode ?? ""} ${err?.errMsg ?? err?.message ?? err}`);
  }
}

async function login(user) {
  const before = count(user, "OnSyncServerFinish");
  await call(
    user,
    "login",
    user.sdk.login({
      userID: user.userID,
      token: user.token,
      platformID: PLATFORM,
      wsAddr: user.wsAddr,
      apiAddr: user.apiAddr,
      logLevel: LOG_LEVEL,
    }),
  );
  await until(`${user.name}'s first sync`, () => {
    if (count(user, "OnSyncServerFailed")) throw new Error(`${user.name}'s sync failed`);
    return count(user, "OnSyncServerFinish") > before;
  });
}

// `to`: a user (single chat) or a group ID
async function say(from, to, text) {
  const message = await call(from, "createTextMessage", from.sdk.createTextMessage(text));
  const target = typeof to === "string" ? { recvID: "", groupID: to } : { recvID: to.userID, groupID: "" };
  const sent = await call(from, "sendMessage", from.sdk.sendMessage({ ...target, message }));
  out({ ev: "sent", user: from.name, msg: summary(sent) });
  return sent;
}

// the messages of `sent` for `user` (to it, or to a group) from others
async function arrives(user, sent) {
  const mine = (m) => m.sendID !== user.userID && (m.groupID || m.recvID === user.userID);
  const ids = sent.filter(mine).map((m) => m.clientMsgID);
  await until(`${user.name} to receive ${ids.join(",")}`, () =>
    ids.every((id) => user.received.some((m) => m.clientMsgID === id)),
  );
}

async function chat(from, to, text) {
  await arrives(to, [await say(from, to, text)]);
}

async function groupChat(from, groupID, text, others) {
  const sent = await say(from, groupID, text);
  for (const user of others) await arrives(user, [sent]);
}

async function history(user, conversationID) {
  let start = "";
  for (let page = 0; page < 20; page++) {
    const got = await call(
      user,
      "getAdvancedHistoryMessageList",
      user.sdk.getAdvancedHistoryMessageList({ conversationID, count: 4, startClientMsgID: start }),
    );
    const msgs = got.messageList.map(summary);
    out({ ev: "history", user: user.name, conversationID, page, msgs, isEnd: got.isEnd });
    if (got.isEnd || !got.messageList.length) return;
    start = got.messageList[0].clientMsgID;
  }
}

// `peer`: the other user (single chat) or a group ID
async function state(user, peer, label) {
  const source =
    typeof peer === "string" ? { sourceID: peer, sessionType: 3 } : { sourceID: peer.userID, sessionType: 1 };
  const conversation = await call(user, "getOneConversation", user.sdk.getOneConversation(source));
  const totalUnread = await call(user, "getTotalUnreadMsgCount", user.sdk.getTotalUnreadMsgCount());
  const { conversationID, conversationType, unreadCount, showName, userID, groupID } = conversation;
  const seen = { conversationID, conversationType, unreadCount, showName, userID, groupID };
  out({ ev: "state", user: user.name, label, conversation: seen, totalUnread });
  return conversation;
}

// One reconnect of the `down` users after gateway `gateway` is killed and started again; `send`
// (by users of the other gateway) runs meanwhile, and what it sent reaches the `down` users through
// their reconnect pulls.
async function missWhileDown(gateway, down, send, conversationID, maxSeqAfter) {
  const reconnects = down.map((user) => count(user, "OnSyncServerFinish"));
  await control(`stop-${gateway}`);
  const sent = await send();
  await control(`start-${gateway}`, { conversationID, wantMaxSeq: maxSeqAfter });
  for (const [i, user] of down.entries()) {
    await until(`${user.name} to reconnect and sync`, () => count(user, "OnSyncServerFinish") > reconnects[i]);
    await arrives(user, sent);
  }
}

async function sayAll(lines) {
  const sent = [];
  for (const [from, to, text] of lines) sent.push(await say(from, to, text));
  return sent;
}

async function markRead(user, conversationID, peer, label = "") {
  await state(user, peer, `${label}before-read`);
  await call(user, "markConversationMessageAsRead", user.sdk.markConversationMessageAsRead(conversationID));
  await state(user, peer, `${label}after-read`);
}

// --- the scenario ------------------------------------------------------------------------------

const A = makeUser("A");
const B = makeUser("B");
const C = makeUser("C");
const users = [A, B, C];
let ok = false;
try {
  for (const user of users) await login(user);
  const conversationID = `si_${[A.userID, B.userID].sort().join("_")}`;

  // --- single chat, A and B ---
  await chat(A, B, "a1");
  await chat(B, A, "b1");
  await chat(A, B, "a2");
  await chat(B, A, "b2");
  await missWhileDown("B", [B, C], () => sayAll([[A, B, "a3"], [A, B, "a4"], [A, B, "a5"]]), conversationID, 7);
  await missWhileDown("A", [A], () => sayAll([[B, A, "b3"], [B, A, "b4"]]), conversationID, 9);
  await chat(A, B, "a6");
  await chat(B, A, "b5");

  await history(A, conversationID);
  await history(B, conversationID);

  // Reading: the SDK applies a peer's read receipt to its own user's read seq too, so a user can
  // only mark read after a message newer than the last receipt it got. Hence: A sends, B reads;
  // B sends, A reads.
  await chat(A, B, "a7");
  await markRead(B, conversationID, A);
  await until("A to get B's read receipt", () => A.receipts.length > 0);
  await chat(B, A, "b6");
  await markRead(A, conversationID, B);
  await until("B to get A's read receipt", () => B.receipts.length > 0);

  // --- group chat, A, B and C ---
  // A creates it with the SDK (the server picks its ID); its creation notification (1501) is the
  // group conversation's first message, pushed to all three, and the SDKs act on it (they add the
  // group: OnJoinedGroupAdded, isJoinGroup).
  const created = await call(
    A,
    "createGroup",
    A.sdk.createGroup({ memberUserIDs: [B.userID, C.userID], groupInfo: { groupName: env("OPENIM_GROUP_NAME") } }),
  );
  out({ ev: "group-created", user: "A", group: groupSummary(created) });
  const groupID = created.groupID;
  const groupConversationID = `sg_${groupID}`;
  for (const user of users) {
    await until(`${user.name} to get the group's creation notification`, () =>
      user.received.some((m) => m.groupID === groupID && m.contentType === 1501),
    );
    await until(`${user.name}'s SDK to add the group`, () => user.joinedGroups.includes(groupID));
    const groups = await call(user, "getJoinedGroupListPage", user.sdk.getJoinedGroupListPage({ offset: 0, count: 20 }));
    const isJoinGroup = await call(user, "isJoinGroup", user.sdk.isJoinGroup(groupID));
    out({ ev: "groups", user: user.name, groups: groups.map(groupSummary), isJoinGroup });
    await state(user, groupID, "group-joined");
  }

  await groupChat(A, groupID, "g-a1", [B, C]);
  await groupChat(B, groupID, "g-b1", [A, C]);
  await groupChat(C, groupID, "g-c1", [A, B]);
  for (const user of users) {
    const members = await call(
      user,
      "getSpecifiedGroupMembersInfo",
      user.sdk.getSpecifiedGroupMembersInfo({ groupID, userIDList: users.map((u) => u.userID) }),
    );
    const seen = members.map(({ userID, nickname, roleLevel }) => ({ userID, nickname, roleLevel }));
    out({ ev: "members", user: user.name, members: seen });
  }
  const groupSays = (lines) => () => sayAll(lines.map(([from, text]) => [from, groupID, text]));
  await missWhileDown("B", [B, C], groupSays([[A, "g-a2"], [A, "g-a3"], [A, "g-a4"]]), groupConversationID, 7);
  await missWhileDown("A", [A], groupSays([[B, "g-b2"], [C, "g-c2"]]), groupConversationID, 9);
  await groupChat(A, groupID, "g-a5", [B, C]);
  await groupChat(B, groupID, "g-b3", [A, C]);

  for (const user of users) await history(user, groupConversationID);

  // C writes last, then A and B read everything
  await groupChat(C, groupID, "g-c3", [A, B]);
  await markRead(A, groupConversationID, groupID, "group-");
  await markRead(B, groupConversationID, groupID, "group-");
  ok = true;
} catch (err) {
  out({ ev: "error", where: "scenario", message: String(err?.stack ?? err) });
} finally {
  for (const user of users) {
    try {
      await user.sdk.logout();
    } catch {
      // already logged out
    }
  }
  out({ ev: "done", ok });
  process.exit(ok ? 0 : 1);
}
