// The soak's own vassal app (compiled to dist/soak/app.js; test/fixtures/http-app.js is used
// too). Everything is driven by the environment the vassal file gives it:
//
//   PORT              listen on 127.0.0.1:PORT (GET /health answers the code in HEALTH_FILE)
//   NO_LISTEN=1       never listen (its default TCP readiness can never pass)
//   HEALTH_FILE       file holding the /health status code (default 200)
//   CRASH_AFTER_MS    exit 3 after this long (a crash the emperor must deregister and restart)
//   GRANDCHILDREN=N   spawn N `sleep` children in its process group (they inherit EMPEROR_VASSAL)
//   STUBBORN_CHILD=1  one more child that ignores SIGTERM: the emperor must SIGKILL the group
//   IGNORE_TERM=1     ignore SIGTERM itself (stop.timeout, then SIGKILL)
//   NOTIFY_AFTER_MS   with start.ready.notify: write READY=1 to $NOTIFY_FD after this long
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';

const e = process.env;

function healthCode(): number {
  if (!e.HEALTH_FILE) return 200;
  try {
    const n = Number(fs.readFileSync(e.HEALTH_FILE, 'utf8').trim());
    return Number.isInteger(n) && n >= 100 && n < 600 ? n : 200;
  } catch {
    return 200;
  }
}

if (e.PORT && e.NO_LISTEN !== '1') {
  const server = http.createServer((req, res) => {
    const code = req.url === '/health' ? healthCode() : 200;
    res.writeHead(code, { 'content-type': 'text/plain' });
    res.end(`${code} from ${process.pid}\n`);
  });
  server.on('error', (err) => {
    process.stderr.write(`listen failed: ${err.message}\n`);
    process.exit(4);
  });
  server.listen(Number(e.PORT), '127.0.0.1');
}

for (let i = 0; i < Number(e.GRANDCHILDREN ?? 0); i++) {
  spawn('sleep', ['3600'], { stdio: 'ignore' }).on('error', () => undefined);
}
if (e.STUBBORN_CHILD === '1') {
  spawn('/bin/sh', ['-c', "trap '' TERM; exec sleep 3600"], { stdio: 'ignore' }).on('error', () => undefined);
}

if (e.IGNORE_TERM === '1') process.on('SIGTERM', () => undefined);
else process.on('SIGTERM', () => process.exit(0));

if (e.CRASH_AFTER_MS) setTimeout(() => process.exit(3), Number(e.CRASH_AFTER_MS));

if (e.NOTIFY_AFTER_MS && e.NOTIFY_FD) {
  const fd = Number(e.NOTIFY_FD);
  setTimeout(() => {
    try {
      fs.writeSync(fd, 'STATUS=soaking\nREADY=1\n');
    } catch {
      // fd closed: the emperor reports a failed start
    }
  }, Number(e.NOTIFY_AFTER_MS));
}

setInterval(() => undefined, 1 << 30);
