// Worker-thread side of VassalParser (parse-pool.ts): parses vassal files off the emperor's main
// thread. One message in, one message out, strictly in order.
import { parentPort } from 'node:worker_threads';
import { parseVassal } from './load.js';
import { replyFor, type ParseRequest, type WorkerMessage } from './parse-pool.js';

const port = parentPort;
port?.on('message', (request: ParseRequest) => {
  port.postMessage(replyFor(request.id, parseVassal(Buffer.from(request.bytes.buffer, request.bytes.byteOffset, request.bytes.byteLength), request.file, request.opts)));
});
const ready: WorkerMessage = { ready: true };
port?.postMessage(ready);
