// Server C of the benchmarks: Node's socket.io 4.x, with an HMAC token middleware of
// the same kind of cost as the gateway's itsdangerous tokens.
//
//   node server.js --port 0 --secret KEY   (the key may also come from BENCH_SECRET)
//
// A token is base64url(JSON claims) "." base64url(HMAC-SHA256(key, that first part)),
// with claims {sub, roles, exp}; it is read from the socket.io auth payload,
// {token: ...}. Prints "ready <port>" once listening; runs until SIGTERM or SIGINT.
"use strict";

const crypto = require("node:crypto");
const http = require("node:http");
const { Server } = require("socket.io");

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const port = Number(option("port", "0"));
const secret = option("secret", process.env.BENCH_SECRET || "");
if (secret.length < 16) {
  console.error("a secret of 16 characters or more is required (--secret or BENCH_SECRET)");
  process.exit(2);
}
const key = Buffer.from(secret, "utf8");

// Verifies a token; returns its claims, or null when it is missing, forged or expired.
function verify(token) {
  if (typeof token !== "string" || token.length > 8192) return null;
  const dot = token.indexOf(".");
  if (dot <= 0) return null;
  const body = token.slice(0, dot);
  const given = Buffer.from(token.slice(dot + 1), "base64url");
  const expected = crypto.createHmac("sha256", key).update(body).digest();
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
  let claims;
  try {
    claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
  } catch {
    return null;
  }
  if (claims === null || typeof claims !== "object" || typeof claims.sub !== "string") return null;
  if (typeof claims.exp !== "number" || claims.exp * 1000 <= Date.now()) return null;
  return claims;
}

// Printable payloads that do not compress to nothing, as real messages do not.
function makePayload(size) {
  return crypto.randomBytes(size).toString("base64url").slice(0, size);
}

function isRoom(value) {
  return typeof value === "string" && value.length > 0 && value.length <= 200;
}

function isCount(value, max) {
  return Number.isInteger(value) && value >= 0 && value <= max;
}

const httpServer = http.createServer();
// socket.io's defaults: websocket permessage-deflate off, pings every 25 s.
const io = new Server(httpServer, { serveClient: false });

io.use((socket, next) => {
  const claims = verify(socket.handshake.auth && socket.handshake.auth.token);
  if (claims === null) {
    const refusal = new Error("Authentication failed");
    refusal.data = { code: "unauthenticated" };
    next(refusal);
    return;
  }
  socket.data.user = { id: claims.sub, roles: claims.roles || [] };
  next();
});

io.on("connection", (socket) => {
  socket.on("bench:join", (room, ack) => {
    if (typeof ack !== "function") return;
    if (!isRoom(room)) {
      ack({ success: false, error: "Invalid room", code: "invalid_payload" });
      return;
    }
    socket.join(room);
    ack({ success: true, room });
  });

  socket.on("bench:echo", (payload, ack) => {
    if (typeof ack === "function") ack({ success: true, payload });
  });

  socket.on("bench:fanout", (request, ack) => {
    if (typeof ack !== "function") return;
    const { room, count, size } = request || {};
    if (!isRoom(room) || !isCount(count, 1e6) || !isCount(size, 1e6)) {
      ack({ success: false, error: "Invalid request", code: "invalid_payload" });
      return;
    }
    const payload = makePayload(size);
    for (let seq = 0; seq < count; seq += 1) {
      io.to(room).emit("bench:msg", seq, payload);
    }
    ack({ success: true, sent: count });
  });

  socket.on("bench:rooms", (request, ack) => {
    if (typeof ack !== "function") return;
    const { rooms, count, size } = request || {};
    if (!isCount(rooms, 1e5) || !isCount(count, 1e6) || !isCount(size, 1e6)) {
      ack({ success: false, error: "Invalid request", code: "invalid_payload" });
      return;
    }
    const payload = makePayload(size);
    for (let seq = 0; seq < count; seq += 1) {
      for (let room = 0; room < rooms; room += 1) {
        io.to(`bench:${room}`).emit("bench:msg", seq, payload);
      }
    }
    ack({ success: true, sent: count * rooms });
  });
});

function stop() {
  io.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`ready ${httpServer.address().port}`);
});
