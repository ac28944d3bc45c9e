// The worker thread that parses vassal files for the emperor (src/config/parse-pool.ts): same
// results as parsing in place, and a file that hangs or exhausts the parser is refused without
// holding up the files queued behind it. The hanging parser is a test worker
// (fixtures/hang-worker.ts), so nothing here depends on how long a real parse takes.
import assert from 'node:assert/strict';
import { describe, it } from './support/test.js';
import { parseVassal, VassalParser } from '../src/config/index.js';

const GOOD = Buffer.from('command: [node, server.js]\nenv: {PORT: 8080}\n');
const HANG_WORKER = new URL('./fixtures/hang-worker.js', import.meta.url);

describe('VassalParser (parsing in a worker thread)', () => {
  it('gives the same frozen spec and the same errors as parseVassal', async () => {
    const parser = new VassalParser();
    try {
      const [spec, bad, dup] = await Promise.all([
        parser.parse(GOOD, '/srv/vassals/web.yaml'),
        parser.parse(Buffer.from('command: "x"\n'), '/srv/vassals/bad.yaml'),
        parser.parse(Buffer.from('{"command":["x"],"command":["y"]}'), '/srv/vassals/dup.json'),
      ]);
      assert.ok(spec.ok);
      assert.deepEqual(spec, parseVassal(GOOD, '/srv/vassals/web.yaml'));
      assert.ok(Object.isFrozen(spec.spec) && Object.isFrozen(spec.spec.env));
      assert.ok(!bad.ok);
      const inPlace = parseVassal('command: "x"\n', '/srv/vassals/bad.yaml');
      assert.ok(!inPlace.ok);
      assert.equal(bad.error.message, inPlace.error.message);
      assert.equal(bad.error.field, 'command');
      assert.ok(!dup.ok);
      assert.match(dup.error.message, /duplicate key "command"/);
      assert.equal(parser.started, 1, 'one worker for all of them');
    } finally {
      await parser.close();
    }
  });

  it('refuses a file whose parse outlives the time limit, replaces the worker, and parses what was queued behind it', async () => {
    // Long enough for a good file's first parse in a fresh worker on a loaded machine (over 0.5 s
    // once, beside two other suites and four busy loops); the hang never ends either way.
    const parser = new VassalParser({ timeLimitMs: 5000, workerUrl: HANG_WORKER });
    try {
      const results = await Promise.all([
        parser.parse(GOOD, '/srv/vassals/first.yaml'),
        parser.parse(Buffer.from('hang'), '/srv/vassals/hang.yaml'),
        parser.parse(GOOD, '/srv/vassals/after.yaml'),
        parser.parse(GOOD, '/srv/vassals/last.yaml'),
      ]);
      const [first, hang, after, last] = results;
      assert.ok(first?.ok && after?.ok && last?.ok, JSON.stringify(results));
      assert.equal(after.spec.name, 'after');
      assert.ok(hang && !hang.ok);
      assert.equal(hang.error.message, '/srv/vassals/hang.yaml: refused: parsing it took more than 5 s (the limit for one vassal file)');
      assert.equal(parser.started, 2, 'a new worker after the one that hung');
    } finally {
      await parser.close();
    }
  });

  it('refuses a file whose parse exhausts the memory limit, and goes on', async () => {
    const parser = new VassalParser({ memoryLimitMb: 16, timeLimitMs: 60_000, workerUrl: HANG_WORKER });
    try {
      const [oom, next] = await Promise.all([parser.parse(Buffer.from('oom'), '/srv/vassals/oom.yaml'), parser.parse(GOOD, '/srv/vassals/next.yaml')]);
      assert.ok(!oom.ok);
      assert.equal(oom.error.message, '/srv/vassals/oom.yaml: refused: parsing it needs more than 16 MB of memory');
      assert.ok(next.ok);
      assert.equal(parser.started, 2);
    } finally {
      await parser.close();
    }
  });

  it('answers every pending parse once closed', async () => {
    const parser = new VassalParser({ workerUrl: HANG_WORKER });
    const pending = parser.parse(Buffer.from('hang'), '/srv/vassals/hang.yaml');
    await parser.close();
    const result = await pending;
    assert.ok(!result.ok);
    assert.match(result.error.message, /shutting down/);
  });
});
