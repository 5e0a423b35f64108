// A plain Node http server: no framework, no dependencies.
// GET /        says hello, with the machine and region the platform gave it
// GET /count   adds one to a counter kept in a file on the volume and returns it
// GET /healthz answers ok
const http = require("node:http");
const fs = require("node:fs");
const path = require("node:path");

const port = Number(process.env.PORT || 3000);
const counterFile = process.env.COUNTER_FILE || "/data/counter.txt";

function bump() {
  fs.mkdirSync(path.dirname(counterFile), { recursive: true });
  // One line per hit: the count is the number of lines, and a crash can't lose earlier ones.
  fs.appendFileSync(counterFile, `${new Date().toISOString()}\n`);
  return fs.readFileSync(counterFile, "utf8").split("\n").filter(Boolean).length;
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(text);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (req.method === "GET" && url.pathname === "/") {
    return json(res, 200, {
      hello: "from node-server",
      node: process.version,
      machine: process.env.FLY_MACHINE_ID || null,
      region: process.env.FLY_REGION || null,
    });
  }
  if (req.method === "GET" && url.pathname === "/count") {
    try {
      return json(res, 200, { count: bump(), file: counterFile });
    } catch (err) {
      console.error("counter:", err.message);
      return json(res, 500, { error: err.message });
    }
  }
  if (req.method === "GET" && url.pathname === "/healthz") {
    return json(res, 200, { ok: true });
  }
  json(res, 404, { error: "not found" });
});

server.listen(port, "0.0.0.0", () => {
  console.log(`node-server listening on :${port}`);
});

function shutdown(signal) {
  console.log(`${signal}: closing`);
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
