// A tiny HTTP app with a /health route: the sample vassal `hello` runs it.
import http from 'node:http';

const port = Number(process.env.PORT ?? 8080);
const started = Date.now();

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ status: 'ok', uptime_s: Math.round((Date.now() - started) / 1000) }));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`hello from ${process.env.EMPEROR_VASSAL ?? 'hello'} (pid ${process.pid})\n`);
});

server.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${port}`));

// Finish in-flight requests on SIGTERM, the emperor's default stop signal.
process.on('SIGTERM', () => {
  console.log('SIGTERM: closing');
  server.close(() => process.exit(0));
});
