// Control requests under concurrency: a real emperor, its real control socket, real requests
// racing each other. Every request must be answered (the resulting state, or a 409) within a
// bound, and each vassal must end in the state its last request asked for.
import assert from 'node:assert/strict';
import { after, before, describe, it } from './support/test.js';
import { requestApi, type ApiAnswer } from '../src/api/client.js';
import type { VassalStatus } from '../src/emperor/emperor.js';
import { EmperorUnderTest, appVassal, makeWorkspace } from './support/emperor.js';
import { fixture } from './support/paths.js';

const APP = fixture('app.js');
/** Longer than any answer may take here (the slowest action is a 2 s forced stop plus a start). */
const ANSWER_BOUND_MS = 30_000;

type Action = 'start' | 'stop' | 'restart' | 'reload';
const wants = (a: Action): string => (a === 'stop' ? 'stopped' : 'running');

interface Sent {
  readonly vassal: string;
  readonly action: Action;
  readonly answer: ApiAnswer | Error;
}

function post(emp: EmperorUnderTest, vassal: string, action: Action): Promise<Sent> {
  return requestApi(emp.socket, 'POST', `/v1/vassals/${vassal}/${action}`, { timeoutMs: ANSWER_BOUND_MS }).then(
    (answer) => ({ vassal, action, answer }),
    (err: unknown) => ({ vassal, action, answer: err instanceof Error ? err : new Error(String(err)) }),
  );
}

function answered(s: Sent): ApiAnswer {
  if (s.answer instanceof Error) assert.fail(`${s.action} ${s.vassal} got no answer: ${s.answer.message}`);
  return s.answer;
}

const seq = (a: ApiAnswer): number => Number(a.headers['x-emperor-seq']);

describe('concurrent control requests', () => {
  let emp: EmperorUnderTest;
  before(async () => {
    emp = await EmperorUnderTest.start(await makeWorkspace());
  });
  after(async () => {
    await emp.stop();
  });

  it('a start arriving while a stop is under way: both answered, the stop first, the start wins', async () => {
    // Ignores SIGTERM, so the stop takes its whole 2 s timeout: the start surely lands in it.
    // Ready by notify, sent once the app's SIGTERM handler is installed: with a fixed ready delay
    // a slow start let the stop's SIGTERM arrive first and end the app at once (CI saw that).
    await emp.writeVassal('slowstop.json', appVassal(APP, { APP_IGNORE_TERM: '1' }, { stop: { timeout: '2s' }, start: { ready: { notify: true } } }));
    await emp.waitEvent('slowstop', 'ready', 0, 60_000);
    const m = emp.mark();
    const stop = post(emp, 'slowstop', 'stop');
    await emp.waitEvent('slowstop', 'stopping', m, 60_000);
    const start = post(emp, 'slowstop', 'start');
    const [s, t] = await Promise.all([stop, start]);
    const sa = answered(s);
    const ta = answered(t);
    assert.equal(sa.status, 200, JSON.stringify(sa.body));
    assert.equal((sa.body as VassalStatus).state, 'stopped', 'the stop is carried out, not lost');
    assert.equal(ta.status, 200, JSON.stringify(ta.body));
    assert.equal((ta.body as VassalStatus).state, 'running');
    assert.ok(seq(sa) < seq(ta), 'answers carry the order the requests were taken in');
    assert.equal((await emp.vassal('slowstop')).state, 'running');
  });

  it('while one request is carried out, a later one replaces the waiting one (409), and the same action joins it', async () => {
    // Its stop takes the whole 20 s timeout: the window in which the later requests must arrive
    // while the stop is still under way. (2 s was not enough on a machine with a CPU hog.)
    // Ready by notify, for the reason given in the test above.
    let m = emp.mark();
    await emp.writeVassal('longstop.json', appVassal(APP, { APP_IGNORE_TERM: '1' }, { stop: { timeout: '20s' }, start: { ready: { notify: true } } }));
    await emp.waitEvent('longstop', 'ready', m, 60_000);
    m = emp.mark();
    const stop = post(emp, 'longstop', 'stop');
    await emp.waitEvent('longstop', 'stopping', m, 60_000);
    m = emp.mark();
    const restart = post(emp, 'longstop', 'restart');
    await emp.waitFor((e) => e.vassal === 'longstop' && e.event === 'control-restart', 'restart taken', m, 60_000);
    const start1 = post(emp, 'longstop', 'start');
    await emp.waitFor((e) => e.vassal === 'longstop' && e.event === 'control-start', 'first start taken', m, 60_000);
    const start2 = post(emp, 'longstop', 'start');
    const [s, r, a, b] = (await Promise.all([stop, restart, start1, start2])).map(answered);
    assert.equal(s!.status, 200);
    assert.equal((s!.body as VassalStatus).state, 'stopped');
    assert.equal(r!.status, 409, 'the waiting restart was replaced by the start');
    assert.match((r!.body as { error: string }).error, /superseded by a later start request/);
    assert.equal(a!.status, 200);
    assert.equal(b!.status, 200);
    assert.deepEqual(a!.body, b!.body, 'the two starts were carried out once, with one answer');
    assert.equal((a!.body as VassalStatus).state, 'running');
    assert.equal(emp.events('longstop', 'spawned', m).length, 1, 'one start, not two, and no restart');
  });

  it('hundreds of mixed requests at once: every one answered, each vassal ends as its last request asked', async () => {
    const names = ['mx-a', 'mx-b', 'mx-c'];
    const m = emp.mark();
    for (const n of names) await emp.writeVassal(`${n}.json`, { command: ['sleep', '1000'], start: { ready: { delay: '10ms' } }, stop: { timeout: '5s' } });
    for (const n of names) await emp.waitEvent(n, 'ready', m, 60_000);

    const actions: Action[] = ['start', 'stop', 'restart', 'reload'];
    // A fixed pseudo-random mix, so a failure can be replayed.
    let x = 12345;
    const rnd = (k: number): number => {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      return x % k;
    };
    const sent = await Promise.all(Array.from({ length: 300 }, () => post(emp, names[rnd(names.length)]!, actions[rnd(actions.length)]!)));

    const unanswered = sent.filter((s) => s.answer instanceof Error);
    assert.equal(unanswered.length, 0, `unanswered: ${unanswered.slice(0, 5).map((s) => `${s.action} ${s.vassal}: ${(s.answer as Error).message}`).join('; ')}`);
    for (const s of sent) {
      const a = answered(s);
      assert.ok(a.status === 200 || a.status === 409, `${s.action} ${s.vassal}: ${a.status} ${JSON.stringify(a.body)}`);
      assert.ok(Number.isInteger(seq(a)), `${s.action} ${s.vassal}: no X-Emperor-Seq`);
      if (a.status === 200) assert.equal((a.body as VassalStatus).state, wants(s.action), `${s.action} ${s.vassal} answered ${JSON.stringify(a.body)}`);
      else assert.match((a.body as { error: string }).error, /superseded/);
    }
    for (const n of names) {
      const mine = sent.filter((s) => s.vassal === n).sort((p, q) => seq(answered(p)) - seq(answered(q)));
      const last = mine[mine.length - 1]!;
      assert.equal(answered(last).status, 200, `the last request for ${n} is carried out`);
      assert.equal((await emp.vassal(n)).state, wants(last.action), `${n} ends as its last request (${last.action}) asked`);
    }
  });
});
