// The message operations through OpenIM's official JS SDK (@openim/client-sdk under Node with `ws`):
// A sends B three messages; A revokes the first (revokeMessage), B's SDK reports it revoked
// (OnNewRecvMessageRevoked); B deletes the second (deleteMessage); B marks the conversation read
// (markConversationMessageAsRead) and A's SDK gets the receipt (OnRecvC2CReadReceipt); A clears the
// conversation (deleteConversationAndDeleteAllMsg).
//
// Configuration (environment): OPENIM_A_USER, OPENIM_A_TOKEN, OPENIM_B_USER, OPENIM_B_TOKEN,
// OPENIM_WS, OPENIM_API, OPENIM_PLATFORM (5, Web), OPENIM_STEP_TIMEOUT_MS (60000).
//
// Output: one JSON object per line on stdout, each with an `ev` field:
//   sent {user, clientMsgID, seq}, revoked {user, data}, receipt {user, receipts},
//   deleted {user, clientMsgID}, cleared {user}, state {user, label, unreadCount, totalUnread},
//   error {where, message}, done {ok}
// The SDK's own console output goes to stderr.

import WS from "ws";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
for (const name of ["log", "info", "debug", "warn", "trace"]) {
  console[name] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

class NodeWebSocket extends WS {
  constructor(url, protocols) {
    super(url, protocols);
    this.binaryType = "arraybuffer";
  }
}
globalThis.WebSocket = NodeWebSocket;

// the ES2017 build (see scenario.mjs for why not the package's main)
const { getSDK, CbEvents } = await import("@openim/client-sdk/lib/index.modern.mjs");

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const PLATFORM = Number(env("OPENIM_PLATFORM", "5"));
const STEP_TIMEOUT_MS = Number(env("OPENIM_STEP_TIMEOUT_MS", "60000"));

process.on("unhandledRejection", (reason) => {
  out({ ev: "error", where: "unhandledRejection", message: String(reason?.stack ?? reason) });
});

async function until(what, check) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((wake) => setTimeout(wake, 50));
  }
}

async function call(user, what, promise) {
  try {
    return (await promise).data;
  } catch (err) {
    throw new Error(`${user.name} ${what}: ${err?.errCode ?? ""} ${err?.errMsg ?? err?.message ?? err}`);
  }
}

function makeUser(name) {
  const user = {
    name,
    sdk: getSDK(),
    userID: env(`OPENIM_${name}_USER`),
    token: env(`OPENIM_${name}_TOKEN`),
    synced: 0,
    received: [],
    revoked: [],
    receipts: [],
  };
  user.sdk.on(CbEvents.OnSyncServerFinish, () => user.synced++);
  user.sdk.on(CbEvents.OnRecvNewMessages, ({ data }) => user.received.push(...data));
  user.sdk.on(CbEvents.OnNewRecvMessageRevoked, ({ data }) => {
    user.revoked.push(data);
    out({ ev: "revoked", user: name, data });
  });
  user.sdk.on(CbEvents.OnRecvC2CReadReceipt, ({ data }) => {
    user.receipts.push(...data);
    out({ ev: "receipt", user: name, receipts: data });
  });
  return user;
}

async function login(user) {
  await call(
    user,
    "login",
    user.sdk.login({
      userID: user.userID,
      token: user.token,
      platformID: PLATFORM,
      wsAddr: env("OPENIM_WS"),
      apiAddr: env("OPENIM_API"),
      logLevel: 3,
    }),
  );
  await until(`${user.name}'s first sync`, () => user.synced > 0);
}

async function say(from, to, text) {
  const message = await call(from, "createTextMessage", from.sdk.createTextMessage(text));
  const sent = await call(from, "sendMessage", from.sdk.sendMessage({ recvID: to.userID, groupID: "", message }));
  out({ ev: "sent", user: from.name, clientMsgID: sent.clientMsgID, seq: sent.seq });
  await until(`${to.name} to receive ${text}`, () => to.received.some((m) => m.clientMsgID === sent.clientMsgID));
  return sent;
}

async function state(user, peer, label) {
  const conversation = await call(
    user,
    "getOneConversation",
    user.sdk.getOneConversation({ sourceID: peer.userID, sessionType: 1 }),
  );
  const totalUnread = await call(user, "getTotalUnreadMsgCount", user.sdk.getTotalUnreadMsgCount());
  out({ ev: "state", user: user.name, label, unreadCount: conversation.unreadCount, totalUnread });
  return conversation;
}

const A = makeUser("A");
const B = makeUser("B");
let ok = false;
try {
  await login(A);
  await login(B);
  const conversationID = `si_${[A.userID, B.userID].sort().join("_")}`;
  const first = await say(A, B, "revoke me");
  const second = await say(A, B, "delete me");
  await say(A, B, "keep me");

  await call(A, "revokeMessage", A.sdk.revokeMessage({ conversationID, clientMsgID: first.clientMsgID }));
  await until("B's SDK to see the revoke", () => B.revoked.some((r) => r.clientMsgID === first.clientMsgID));

  await call(B, "deleteMessage", B.sdk.deleteMessage({ conversationID, clientMsgID: second.clientMsgID }));
  out({ ev: "deleted", user: "B", clientMsgID: second.clientMsgID });

  await state(B, A, "before-read");
  await call(B, "markConversationMessageAsRead", B.sdk.markConversationMessageAsRead(conversationID));
  await until("A to get B's read receipt", () => A.receipts.length > 0);
  await state(B, A, "after-read");

  await call(A, "deleteConversationAndDeleteAllMsg", A.sdk.deleteConversationAndDeleteAllMsg(conversationID));
  out({ ev: "cleared", user: "A" });
  ok = true;
} catch (err) {
  out({ ev: "error", where: "scenario", message: String(err?.stack ?? err) });
} finally {
  for (const user of [A, B]) {
    try {
      await user.sdk.logout();
    } catch {
      // already logged out
    }
  }
  out({ ev: "done", ok });
  process.exit(ok ? 0 : 1);
}
