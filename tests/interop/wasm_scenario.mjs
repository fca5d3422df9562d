// OpenIM's core SDK (@openim/wasm-client-sdk 3.8.5: openim-sdk-core v3.8.3 compiled to WebAssembly)
// chatting through our stack, three users each in a page of their own (a browser context each, so
// each has its own IndexedDB) in headless Chromium, driven by playwright-core. The page
// (tests/interop/wasm/index.html) and the package's assets are served by the pytest side
// (tests/interop/static_server.py).
//
// Scenario: A and B log in; 20 messages each way, alternating; A logs out; B sends 5; A logs in again
// and reads the whole history (45). C logs in; the pytest side creates a group of the three over REST
// ("create-group"); everyone sends to it; the gateway is killed and started again mid-chat
// ("restart-gateway"); A sends at once (B and C may still be reconnecting), then everyone again; every
// user reads the group's history, and A and B the single chat's.
//
// Configuration (environment):
//   OPENIM_PAGE                        the page's URL
//   OPENIM_API, OPENIM_WS              the stack's REST and websocket addresses (one gateway)
//   OPENIM_A_USER, OPENIM_A_TOKEN, ... B, C
//   OPENIM_A_TOKEN2                    A's token for its second login (a logout revokes the first)
//   OPENIM_GROUP_ID                    the group the pytest side creates at "create-group"
//   OPENIM_CHROMIUM (/usr/bin/chromium), OPENIM_PLATFORM (5, Web), OPENIM_STEP_TIMEOUT_MS (60000),
//   OPENIM_SDK_LOG_LEVEL (3; 6 logs everything the SDK does, to stderr)
//
// Output: one JSON object per line on stdout, each with an `ev` field:
//   sdk-event {user, name, errCode}   connection, sync, kick and group events
//   sent {user, msg}                  a message this user sent (the SDK's answer)
//   recv {user, msgs}                 OnRecvNewMessages
//   history {user, label, conversationID, msgs, isEnd}
//   groups {user, groups, group}       getJoinedGroupList once it has the group (and that group)
//   rest-error {user, url, status, body}
//                                     a REST answer that is not HTTP 200 with errCode 0
//   ws-text {user, socket, index, text}
//                                     a text frame the server sent (only the connection answer and pong
//                                     are allowed to a gob client)
//   ws-error {user, error}, page-error {user, message}
//   await {step}                      the script waits for a line "ok <step>" on stdin:
//     create-group                    create OPENIM_GROUP_ID with A as owner, B and C as members
//     restart-gateway                 kill the gateway and start it again
//   error {where, message}, done {ok}
// The pages' console output goes to stderr.

import readline from "node:readline";
import { chromium } from "playwright-core";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const log = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const PAGE = env("OPENIM_PAGE");
const API = env("OPENIM_API");
const WS = env("OPENIM_WS");
const GROUP_ID = env("OPENIM_GROUP_ID");
const PLATFORM = Number(env("OPENIM_PLATFORM", "5"));
const STEP_TIMEOUT_MS = Number(env("OPENIM_STEP_TIMEOUT_MS", "60000"));
const CHROMIUM = env("OPENIM_CHROMIUM", "/usr/bin/chromium");
const LOG_LEVEL = Number(env("OPENIM_SDK_LOG_LEVEL", "3")); // the core SDK's: 3 warnings, 6 everything

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

async function control(step) {
  out({ ev: "await", step });
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

// --- one SDK user: a page of its own ---------------------------------------------------------

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
  status: m.status,
  text: m.textElem?.content ?? null,
  senderNickname: m.senderNickname ?? "",
});

const WATCHED = new Set([
  "OnConnecting",
  "OnConnectSuccess",
  "OnConnectFailed",
  "OnKickedOffline",
  "OnUserTokenExpired",
  "OnUserTokenInvalid",
  "OnSyncServerStart",
  "OnSyncServerFinish",
  "OnSyncServerFailed",
  "OnJoinedGroupAdded",
  "OnJoinedGroupDeleted",
]);

class User {
  constructor(label, browser) {
    this.label = label;
    this.browser = browser;
    this.userID = env(`OPENIM_${label}_USER`);
    this.token = env(`OPENIM_${label}_TOKEN`);
    this.events = [];
    this.received = [];
    this.sockets = 0;
  }

  count(name) {
    return this.events.filter((e) => e.name === name).length;
  }

  async open() {
    this.context = await this.browser.newContext();
    const page = (this.page = await this.context.newPage());
    const user = this.label;
    page.on("console", (m) => {
      const text = m.text();
      if (!text.startsWith("sql debug")) log(`[${user} ${m.type()}]`, text.slice(0, 2000));
    });
    page.on("pageerror", (e) => out({ ev: "page-error", user, message: e.message }));
    page.on("response", async (r) => {
      if (!r.url().startsWith(API) || r.request().method() === "OPTIONS") return;
      let body = "";
      try {
        body = await r.text();
        log(`[${user} REST ${r.status()}] ${r.url()} ${r.request().postData()?.slice(0, 300)} -> ${body.slice(0, 600)}`);
        const parsed = JSON.parse(body);
        if (r.status() === 200 && parsed.errCode === 0) return;
      } catch {
        // not JSON: reported below
      }
      out({ ev: "rest-error", user, url: r.url(), status: r.status(), body: body.slice(0, 500) });
    });
    page.on("requestfailed", (r) => {
      if (r.url().startsWith(API)) out({ ev: "rest-error", user, url: r.url(), status: 0, body: r.failure()?.errorText });
    });
    page.on("websocket", (ws) => {
      const socket = ++this.sockets;
      let index = 0;
      ws.on("framereceived", (f) => {
        if (typeof f.payload === "string") out({ ev: "ws-text", user, socket, index, text: f.payload.slice(0, 300) });
        index += 1;
      });
      ws.on("socketerror", (error) => out({ ev: "ws-error", user, error: String(error) }));
    });
    await page.exposeFunction("__imEvent", (name, json) => {
      const event = JSON.parse(json);
      if (name === "OnRecvNewMessages") {
        const msgs = (event.data ?? []).map(summary);
        this.received.push(...msgs);
        out({ ev: "recv", user, msgs });
      } else if (WATCHED.has(name)) {
        const groupID = name.startsWith("OnJoinedGroup") ? event.data?.groupID : undefined;
        this.events.push({ name, groupID });
        out({ ev: "sdk-event", user, name, errCode: event.errCode, groupID });
      }
    });
    await page.goto(LOG_LEVEL >= 5 ? `${PAGE}/?debug` : PAGE);
    await page.waitForFunction(() => window.imReady === true);
  }

  async call(method, ...args) {
    const answer = await this.page.evaluate(
      async ([method, args]) => {
        try {
          return { ok: await window.im[method](...args) };
        } catch (error) {
          return { error: JSON.stringify(error) ?? String(error) };
        }
      },
      [method, args],
    );
    if (answer.error !== undefined) throw new Error(`${this.label} ${method}: ${answer.error}`);
    return answer.ok;
  }

  async login(token = this.token) {
    const synced = this.count("OnSyncServerFinish");
    await this.call("login", {
      userID: this.userID,
      token,
      platformID: PLATFORM,
      apiAddr: API,
      wsAddr: WS,
      logLevel: LOG_LEVEL,
      isLogStandardOutput: LOG_LEVEL >= 5,
    });
    await until(`${this.label}'s sync`, () => this.count("OnSyncServerFinish") > synced);
  }

  async logout() {
    await this.call("logout");
  }

  async send(text, { recvID = "", groupID = "" }) {
    const message = (await this.call("createTextMessage", text)).data;
    const answer = await this.call("sendMessage", { recvID, groupID, message });
    const msg = summary(answer.data);
    out({ ev: "sent", user: this.label, msg });
    return msg;
  }

  // the SDK syncs the group when the creation notification comes
  async waitForGroup(groupID) {
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    for (;;) {
      const groups = (await this.call("getJoinedGroupList")).data ?? [];
      if (groups.some((g) => g.groupID === groupID)) {
        const g = groups.find((g) => g.groupID === groupID);
        out({ ev: "groups", user: this.label, groups: groups.map((g) => g.groupID), group: { groupID: g.groupID, groupName: g.groupName, ownerUserID: g.ownerUserID, memberCount: g.memberCount } });
        return;
      }
      if (Date.now() > deadline) throw new Error(`${this.label} never joined ${groupID}`);
      await new Promise((wake) => setTimeout(wake, 200));
    }
  }

  // the whole conversation, newest page first, 10 a page: oldest first once
  async history(conversationID, label) {
    let start = "";
    const msgs = [];
    for (let page = 0; page < 20; page++) {
      const answer = await this.call("getAdvancedHistoryMessageList", {
        conversationID,
        count: 10,
        startClientMsgID: start,
        viewType: 0,
      });
      const list = answer.data.messageList ?? [];
      msgs.unshift(...list.map(summary));
      if (answer.data.isEnd || list.length === 0) {
        out({ ev: "history", user: this.label, label, conversationID, msgs, isEnd: answer.data.isEnd });
        return msgs;
      }
      start = list[0].clientMsgID;
    }
    throw new Error(`${this.label}: history of ${conversationID} never ended`);
  }
}

// --- the scenario ----------------------------------------------------------------------------

const singleConversation = (a, b) => `si_${[a, b].sort().join("_")}`;

async function main() {
  // chromium.launch starts Chromium with a fresh --user-data-dir of its own (a new temporary
  // directory, removed on close); each user gets a browser context in it, with storage of its own.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const [A, B, C] = ["A", "B", "C"].map((label) => new User(label, browser));
    for (const user of [A, B, C]) await user.open();
    const conv = singleConversation(A.userID, B.userID);
    const groupConv = `sg_${GROUP_ID}`;

    // single chat: 20 each way, alternating
    await A.login();
    await B.login();
    for (let i = 1; i <= 20; i++) {
      await A.send(`a${i}`, { recvID: B.userID });
      await B.send(`b${i}`, { recvID: A.userID });
    }
    const fromPeer = (user, peer) => user.received.filter((m) => m.sendID === peer.userID && !m.groupID);
    await until("A and B receive 20 each", () => fromPeer(A, B).length >= 20 && fromPeer(B, A).length >= 20);
    await A.history(conv, "single-before-logout");

    // A away: B sends 5; A back reads all 45. Our gateway revokes a token at logout
    // (docs/openim-sdk-core.md): A comes back with a new one, as an app does
    await A.logout();
    for (let i = 21; i <= 25; i++) await B.send(`b${i}`, { recvID: A.userID });
    await A.login(env("OPENIM_A_TOKEN2"));
    await A.history(conv, "single-after-relogin");
    await B.history(conv, "single-after-relogin");

    // group over REST, then a gateway restart mid-chat
    await C.login();
    await control("create-group");
    for (const user of [A, B, C]) await user.waitForGroup(GROUP_ID);
    for (let round = 1; round <= 3; round++) {
      for (const user of [A, B, C]) await user.send(`g-${user.label.toLowerCase()}${round}`, { groupID: GROUP_ID });
    }
    const connected = [A, B, C].map((user) => user.count("OnConnectSuccess"));
    await control("restart-gateway");
    await until("A reconnects", () => A.count("OnConnectSuccess") > connected[0]);
    for (let i = 1; i <= 3; i++) await A.send(`g-a-back${i}`, { groupID: GROUP_ID });
    await until("B and C reconnect", () =>
      [B, C].every((user, k) => user.count("OnConnectSuccess") > connected[k + 1]),
    );
    for (const user of [B, C, A]) await user.send(`g-${user.label.toLowerCase()}-last`, { groupID: GROUP_ID });
    await B.send("b-last", { recvID: A.userID });
    // what was sent while a user was reconnecting comes with its history, not as new messages (the
    // core SDK pulls only each conversation's newest message when it connects): wait for what
    // everyone sent once all were back
    for (const user of [A, B, C]) {
      const lasts = [A, B, C].filter((other) => other !== user).map((other) => `g-${other.label.toLowerCase()}-last`);
      await until(`${user.label} receives ${lasts}`, () => lasts.every((text) => user.received.some((m) => m.text === text)));
    }
    await until("A has b-last", () => A.received.some((m) => m.text === "b-last"));
    for (const user of [A, B, C]) await user.history(groupConv, "group");
    await A.history(conv, "single-end");
    await B.history(conv, "single-end");
    out({ ev: "done", ok: true });
  } finally {
    await browser.close();
  }
}

// stdin's reader would keep Node alive: exit once done
main().then(
  () => process.exit(0),
  (error) => {
    out({ ev: "error", where: "main", message: String(error?.stack ?? error) });
    out({ ev: "done", ok: false });
    process.exit(1);
  },
);
