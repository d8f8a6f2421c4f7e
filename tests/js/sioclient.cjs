// The official socket.io client, driven over stdin/stdout by a test.
// Commands (one JSON object per line on stdin):
//   {"cmd": "connect", "url": ..., "namespace": ..., "auth": {...}, "transports": [...]}
//   {"cmd": "drop"}              close the transport as a network failure would
//   {"cmd": "reconnect", "auth", "url"} connect again (with new auth, if given; to
//                               another server, if given: the Manager opens its
//                               next engine on socket.io.uri)
//   {"cmd": "pause"}             reconnect only when told to (a server that dies
//                               is then not retried)
//   {"cmd": "disconnect"}        an explicit disconnect
//   {"cmd": "emit", "event": ..., "args": [...], "ack": true}
//   {"cmd": "exit"}
// Reports (one JSON object per line on stdout): {"type": "connect", "id", "recovered", "pid"},
// {"type": "disconnect", "reason"}, {"type": "connect_error", "message", "data"},
// {"type": "event", "name", "args"}, {"type": "ack", "n", "args"}.
"use strict";
const { io } = require("socket.io-client");
const readline = require("readline");

let socket = null;
let acks = 0;
const say = (report) => process.stdout.write(JSON.stringify(report) + "\n");

const commands = {
  connect({ url, namespace, auth, transports }) {
    socket = io(url + (namespace || "/"), {
      auth: auth || {},
      transports: transports || ["websocket"],
      withCredentials: true, // a cookie jar, as a browser has (polling sessions are bound by cookie)
      reconnectionDelay: 100,
      reconnectionDelayMax: 200,
    });
    socket.on("connect", () =>
      // _pid: the private id the server gave (socket.io-client keeps it there).
      say({ type: "connect", id: socket.id, recovered: socket.recovered, pid: socket._pid || null }),
    );
    socket.on("disconnect", (reason) => say({ type: "disconnect", reason }));
    socket.on("connect_error", (err) => say({ type: "connect_error", message: err.message, data: err.data || null }));
    socket.onAny((name, ...args) => say({ type: "event", name, args }));
  },
  drop() {
    // As a network failure: the transport closes; the client reconnects only when
    // told to, so that a test can act while it is away.
    socket.io.reconnection(false);
    socket.io.engine.close();
  },
  pause() {
    socket.io.reconnection(false);
  },
  reconnect({ auth, url }) {
    if (auth) socket.auth = auth;
    if (url) socket.io.uri = url;
    socket.io.reconnection(true);
    socket.connect();
  },
  disconnect() {
    socket.disconnect();
  },
  emit({ event, args, ack }) {
    const n = ++acks;
    if (ack) {
      socket.emit(event, ...(args || []), (...reply) => say({ type: "ack", n, args: reply }));
    } else {
      socket.emit(event, ...(args || []));
    }
  },
  exit() {
    if (socket) socket.disconnect();
    process.exit(0);
  },
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  commands[command.cmd](command);
});
process.stdin.on("end", () => process.exit(0));
