// The vassals directory replaced by a rename dance (build vassals.new, move the old one away,
// rename the new one into place): the emperor must notice the new directory (its inode changed)
// and watch it, not go on watching the old one it can no longer see by name.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from './support/test.js';
import { EmperorUnderTest, appVassal, makeWorkspace } from './support/emperor.js';
import { fixture } from './support/paths.js';

const APP = fixture('app.js');

describe('vassals directory replaced', () => {
  let emp: EmperorUnderTest | undefined;
  after(async () => {
    await emp?.stop();
  });

  it('is detected at the next rescan, re-watched (logged once), and new files deploy through events', async () => {
    const ws = await makeWorkspace();
    // Periodic rescans out of reach of the test: only the watch (and the rescan after a burst
    // of events) can see the new files.
    emp = await EmperorUnderTest.start(ws, ['--rescan-interval', '1h']);
    await emp.writeVassal('old.json', appVassal(APP));
    await emp.waitEvent('old', 'ready', 0, 60_000);

    // The rename dance of configuration-management tools.
    const fresh = `${ws.vassals}.new`;
    await fs.mkdir(fresh);
    await fs.writeFile(path.join(fresh, 'first.json'), JSON.stringify(appVassal(APP)));
    let m = emp.mark();
    await fs.rename(ws.vassals, `${ws.vassals}.old`);
    await fs.rename(fresh, ws.vassals);
    // What the new directory holds is applied: first deployed, old (absent there) stopped.
    await emp.waitEvent('first', 'ready', m, 60_000);
    await emp.waitEvent('old', 'stopped', m, 60_000);

    // A file dropped after all that arrives through the new watch (a rescan is an hour away).
    m = emp.mark();
    await emp.writeVassal('second.json', appVassal(APP));
    await emp.waitEvent('second', 'ready', m, 60_000);

    // A file in the old, moved-away directory is not one of ours any more.
    await fs.writeFile(path.join(`${ws.vassals}.old`, 'stray.json'), JSON.stringify(appVassal(APP)));
    await emp.writeVassal('third.json', appVassal(APP));
    await emp.waitEvent('third', 'ready', m, 60_000);
    assert.equal(emp.events('stray', 'spawned').length, 0);
    const replaced = emp.entries.find((e) => e.event === 'watch-replaced');
    assert.match(replaced?.message ?? '', /vassals directory .* was replaced .*watching the new one/);
    assert.equal(emp.entries.filter((e) => e.event === 'watch-replaced').length, 1, 'the replacement is logged once');
  });
});
