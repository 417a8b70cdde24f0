// A fast stand-in for Courier on 127.0.0.1, so the benchmark measures the client, not the server.
// Node's http module answers a keep-alive POST in microseconds. Prints the port it listens on.
// `node server.js 20` answers each request 20 ms late instead, as an API across a network does.
const http = require("http");

const reply = Buffer.from('{"runId":"1-bench"}');
const delay = Number(process.argv[2] || 0);
const answer = (res) => {
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": reply.length });
  res.end(reply);
};
const server = http.createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => {
    if (delay > 0) {
      setTimeout(answer, delay, res);
    } else {
      answer(res);
    }
  });
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 61000;
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${server.address().port}\n`);
});
