// The main load generator of the benchmarks: the official socket.io-client 4.x (the
// client real users run), websocket transport only, many clients in one Node process.
//
//   node loadgen.cjs --url http://127.0.0.1:PORT
//
// The harness (run.py) sends one JSON command per line on stdin and reads one JSON
// answer per line on stdout, {"id": <the command's id>, ...}, or {"id", "error"} when a
// command failed. Commands ("op"):
//
// - connect {tokens, concurrency, timeout}: one client per token (null: no auth),
//   `concurrency` connecting at a time; answers {clients: [ids], elapsed} (seconds).
//   If one fails, those opened are closed and the command fails.
// - call {clients, event, args, timeout}: client i emits `event` with args[i] and an
//   acknowledgement callback; answers {answers} once every one is acknowledged.
// - deliver {clients, controller, event, request, count, size, timeout}: every client
//   expects `count` bench:msg (seq, payload[, offset]) messages, seq 0 .. count - 1 in
//   order, each payload `size` characters; the controller emits `event` with
//   `request`; answers {delivery, elapsed, cpu} once every client has every message
//   (or the timeout passed): elapsed from the emit to the last delivery, cpu this
//   process's CPU seconds meanwhile.
// - acks {clients, rounds, gap, seed, text, record, timeout}: each client calls
//   bench:echo `rounds` times, one at a time, after random pauses of 0 to 2 * gap
//   seconds; answers {expected, received, errors, round_trips} (milliseconds, when
//   `record`), received counting the acknowledgements that echoed the payload.
// - close {clients}: disconnects them (the websocket is closed, as the client does
//   when its last namespace is left).
// - extensions: {offered, negotiated}, the Sec-WebSocket-Extensions headers seen.
// - cpu: {cpu}, this process's CPU seconds so far.
// - exit: answers, then exits.
"use strict";

const readline = require("node:readline");
const { performance } = require("node:perf_hooks");
const { isDeepStrictEqual } = require("node:util");
const { io } = require("socket.io-client");

const MAX_ERRORS = 5; // delivery errors kept per run

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const url = option("url", "");
if (!url) {
  console.error("--url is required");
  process.exit(2);
}

const clients = new Map(); // id -> Client
let nextId = 0;
const offered = new Set();
const negotiated = new Set();

function cpuSeconds(usage) {
  return (usage.user + usage.system) / 1e6;
}

class Delivery {
  constructor(clientCount, count, size) {
    this.clients = clientCount;
    this.count = count;
    this.size = size;
    this.remaining = clientCount;
    this.received = 0;
    this.outOfOrder = 0;
    this.wrongSize = 0;
    this.unexpected = 0;
    this.errors = [];
    this.started = performance.now();
    this.finished = null;
    this.done = new Promise((resolve) => {
      this._resolve = resolve;
    });
    if (clientCount === 0 || count === 0) this._finish();
  }

  get expected() {
    return this.clients * this.count;
  }

  error(text) {
    if (this.errors.length < MAX_ERRORS) this.errors.push(text);
  }

  clientDone() {
    this.remaining -= 1;
    if (this.remaining === 0) this._finish();
  }

  _finish() {
    this.finished = performance.now();
    this._resolve();
  }

  summary() {
    const complete = this.remaining === 0 && this.received === this.expected;
    return {
      expected: this.expected,
      received: this.received,
      in_order:
        complete && this.outOfOrder === 0 && this.wrongSize === 0 && this.unexpected === 0,
      out_of_order: this.outOfOrder,
      wrong_size: this.wrongSize,
      unexpected: this.unexpected,
      errors: this.errors.slice(),
    };
  }
}

class Client {
  constructor(socket) {
    this.id = nextId++;
    this.socket = socket;
    this.delivery = null;
    this.nextSeq = 0;
    this.got = 0;
    this.stray = 0;
    socket.on("bench:msg", (seq, payload) => this.message(seq, payload));
  }

  expect(delivery) {
    this.delivery = delivery;
    this.nextSeq = 0;
    this.got = 0;
  }

  message(seq, payload) {
    const delivery = this.delivery;
    if (delivery === null || this.got >= delivery.count) {
      this.stray += 1;
      if (delivery !== null) {
        delivery.unexpected += 1;
        delivery.error(`c${this.id}: unexpected bench:msg ${seq}`);
      }
      return;
    }
    if (seq !== this.nextSeq) {
      delivery.outOfOrder += 1;
      delivery.error(`c${this.id}: got seq ${seq}, expected ${this.nextSeq}`);
    }
    const size = typeof payload === "string" ? payload.length : -1;
    if (size !== delivery.size) {
      delivery.wrongSize += 1;
      delivery.error(`c${this.id}: payload of ${size} characters, not ${delivery.size}`);
    }
    this.nextSeq = seq + 1;
    this.got += 1;
    delivery.received += 1;
    if (this.got === delivery.count) delivery.clientDone();
  }

  call(event, data, timeoutMs) {
    return new Promise((resolve, reject) => {
      this.socket.timeout(timeoutMs).emit(event, data, (err, answer) => {
        if (err) reject(new Error(`c${this.id}: no acknowledgement of ${event}: ${err.message}`));
        else resolve(answer);
      });
    });
  }
}

function connectOne(token, timeoutMs) {
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: timeoutMs,
      auth: token === null || token === undefined ? undefined : { token },
    });
    // The websocket (ws's) exists as soon as io() returns: its pending request tells
    // what the client offers, its upgrade response what the server agreed to.
    const ws = socket.io.engine && socket.io.engine.transport && socket.io.engine.transport.ws;
    if (ws && typeof ws.once === "function") {
      const request = ws._req;
      if (request && typeof request.getHeader === "function") {
        offered.add(request.getHeader("sec-websocket-extensions") || "(none)");
      }
      ws.once("upgrade", (response) => {
        negotiated.add((response && response.headers["sec-websocket-extensions"]) || "(none)");
      });
    }
    const timer = setTimeout(() => {
      socket.off();
      socket.close();
      reject(new Error(`connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("connect_error");
      resolve(new Client(socket));
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.off();
      socket.close();
      const data = err && err.data ? ` ${JSON.stringify(err.data)}` : "";
      reject(new Error(`connect refused or failed: ${err && err.message}${data}`));
    });
  });
}

function closeClients(ids) {
  for (const id of ids) {
    const client = clients.get(id);
    if (client === undefined) continue;
    clients.delete(id);
    client.socket.off();
    client.socket.close();
  }
}

function get(id) {
  const client = clients.get(id);
  if (client === undefined) throw new Error(`no client ${id}`);
  return client;
}

async function connect({ tokens, concurrency, timeout }) {
  const timeoutMs = 1000 * (timeout || 15);
  const opened = new Array(tokens.length);
  let next = 0;
  let failure = null;
  async function worker() {
    while (failure === null && next < tokens.length) {
      const index = next++;
      try {
        const client = await connectOne(tokens[index], timeoutMs);
        clients.set(client.id, client);
        opened[index] = client.id;
      } catch (err) {
        if (failure === null) failure = err;
      }
    }
  }
  const started = performance.now();
  const workers = [];
  for (let i = 0; i < Math.max(1, concurrency || 1); i += 1) workers.push(worker());
  await Promise.all(workers);
  const elapsed = (performance.now() - started) / 1000;
  if (failure !== null) {
    closeClients(opened.filter((id) => id !== undefined));
    throw failure;
  }
  return { clients: opened, elapsed };
}

async function callAll({ clients: ids, event, args, timeout }) {
  const timeoutMs = 1000 * (timeout || 30);
  const answers = await Promise.all(ids.map((id, i) => get(id).call(event, args[i], timeoutMs)));
  return { answers };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function deliver({ clients: ids, controller, event, request, count, size, timeout }) {
  const targets = ids.map(get);
  const sender = get(controller);
  const delivery = new Delivery(targets.length, count, size);
  for (const client of targets) client.expect(delivery);
  const timeoutMs = 1000 * timeout;
  const cpuBefore = process.cpuUsage();
  delivery.started = performance.now();
  const answer = await sender.call(event, request, timeoutMs);
  if (!(answer && answer.success === true)) {
    throw new Error(`${event} answered ${JSON.stringify(answer)}`);
  }
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  const done = await Promise.race([delivery.done.then(() => true), timedOut]);
  clearTimeout(timer);
  const cpu = cpuSeconds(process.cpuUsage(cpuBefore));
  if (!done) {
    delivery.error(
      `timed out after ${timeout} s with ${delivery.received} of ${delivery.expected} messages`,
    );
  }
  const end = delivery.finished === null ? performance.now() : delivery.finished;
  for (const client of targets) client.delivery = null;
  return { delivery: delivery.summary(), elapsed: (end - delivery.started) / 1000, cpu };
}

// A small seeded generator (mulberry32) for the pauses: pacing, not secrets.
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function acks({ clients: ids, rounds, gap, seed, text, record, timeout }) {
  const timeoutMs = 1000 * timeout;
  const next = random(seed);
  const result = { expected: 0, received: 0, errors: [], round_trips: [] };
  async function calls(index, client) {
    for (let round = 0; round < rounds; round += 1) {
      await sleep(next() * 2 * gap * 1000);
      const payload = { client: index, round, text };
      const started = performance.now();
      let answer;
      try {
        answer = await client.call("bench:echo", payload, timeoutMs);
      } catch (err) {
        answer = { failed: err.message };
      }
      const elapsed = performance.now() - started;
      result.expected += 1;
      if (isDeepStrictEqual(answer, { success: true, payload })) {
        result.received += 1;
      } else if (result.errors.length < MAX_ERRORS) {
        result.errors.push(`bench:echo answered ${JSON.stringify(answer).slice(0, 200)}`);
      }
      if (record) result.round_trips.push(elapsed);
    }
  }
  await Promise.all(ids.map((id, index) => calls(index, get(id))));
  return result;
}

const commands = {
  connect,
  call: callAll,
  deliver,
  acks,
  close: async ({ clients: ids }) => {
    closeClients(ids);
    return {};
  },
  extensions: async () => ({ offered: [...offered], negotiated: [...negotiated] }),
  cpu: async () => ({ cpu: cpuSeconds(process.cpuUsage()) }),
  exit: async () => ({}),
};

function answer(reply) {
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    answer({ id: null, error: "not JSON" });
    return;
  }
  const run = commands[command.op];
  if (run === undefined) {
    answer({ id: command.id, error: `unknown op ${command.op}` });
    return;
  }
  run(command).then(
    (reply) => {
      answer({ id: command.id, ...reply });
      if (command.op === "exit") {
        closeClients([...clients.keys()]);
        process.exit(0);
      }
    },
    (err) => answer({ id: command.id, error: String((err && err.message) || err) }),
  );
});
// The harness gone: leave at once.
lines.on("close", () => process.exit(0));
