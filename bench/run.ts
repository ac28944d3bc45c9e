// `npm run bench` / `node dist/bench/run.js [SECTION...]`: run the bench sections in order and
// print one markdown table (stdout); progress goes to stderr.
//
// Exit code: 0 when every measurement was taken, even if some MISS their target (a bench
// measures, it does not judge); 1 when the bench itself failed (an error row, or something it
// started could not be cleaned up); 2 for a bad command line.
//
// Adding a section: write bench/<name>.ts exporting a Section (see bench/types.ts) and append
// it to SECTIONS below.
import { checks } from './checks.js';
import { consul } from './consul.js';
import { containment } from './containment.js';
import { core } from './core.js';
import { dashboard } from './dashboard.js';
import { etcd } from './etcd.js';
import { fleet } from './fleet.js';
import { load } from './load.js';
import { output } from './output.js';
import { parse } from './parse.js';
import { peers, peersTable } from './peers.js';
import { scale } from './scale.js';
import { uwsgi } from './uwsgi.js';
import { cleanupAll, killAllSync } from './harness.js';
import type { Row, Section } from './types.js';
import { fmtMs, now } from './util.js';

const SECTIONS: readonly Section[] = [core, containment, output, parse, checks, load, etcd, consul, uwsgi, dashboard, fleet];
/** Also runnable by name; not part of a plain `npm run bench` (it runs other supervisors). */
const ALL: readonly Section[] = [...SECTIONS, peers, scale];

/** Whole-run guard: sections have their own timeouts; this only catches a bench bug. */
const GLOBAL_TIMEOUT_MS = 20 * 60_000;

const progress = (msg: string): void => {
  process.stderr.write(`[bench ${((now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);
};
const started = now();

function table(rows: readonly Row[]): string {
  const head = ['section', 'metric', 'value', 'target', 'ok'];
  const cells = rows.map((r) => [r.section, r.metric, r.value, r.target, r.status === 'info' ? '—' : r.status === 'error' ? 'ERROR' : r.status]);
  const esc = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const all = [head, ...cells].map((r) => r.map(esc));
  const width = head.map((_, i) => Math.max(...all.map((r) => [...r[i]!].length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c + ' '.repeat(width[i]! - [...c].length)).join(' | ')} |`;
  return [line(all[0]!), `|${width.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...all.slice(1).map(line)].join('\n');
}

let cleaning: Promise<string[]> | undefined;
const cleanup = (): Promise<string[]> => (cleaning ??= cleanupAll());

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes('-h') || args.includes('--help')) {
    process.stdout.write(`usage: node dist/bench/run.js [--peers] [SECTION...]\nsections, run in this order: ${SECTIONS.map((s) => `${s.name} (${s.title})`).join(', ')}\n--peers (or section peers): ${peers.title}\nscale (only when named): ${scale.title}\n`);
    return 0;
  }
  // --peers: the side-by-side comparison (section peers) instead of the emperor-only sections.
  if (args.includes('--peers')) args.splice(args.indexOf('--peers'), 1, peers.name);
  const unknown = args.filter((a) => !ALL.some((s) => s.name === a));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown section(s) ${unknown.join(', ')}; known: ${SECTIONS.map((s) => s.name).join(', ')}\n`);
    return 2;
  }
  const selected = args.length === 0 ? SECTIONS : ALL.filter((s) => args.includes(s.name));

  const rows: Row[] = [];
  for (const section of selected) {
    progress(`section ${section.name}: ${section.title}`);
    const t0 = now();
    try {
      rows.push(...(await section.run({ progress: (msg) => progress(`${section.name}: ${msg}`) })));
    } catch (err) {
      rows.push({ section: section.name, metric: 'section', value: `bench failed: ${(err as Error).message}`, target: '—', status: 'error' });
    }
    // Between sections too, so one section's leftovers cannot skew the next one's figures.
    for (const p of await cleanupAll()) rows.push({ section: section.name, metric: 'clean-up', value: p, target: '—', status: 'error' });
    progress(`section ${section.name} done in ${fmtMs(now() - t0)}`);
  }
  for (const p of await cleanup()) rows.push({ section: '-', metric: 'clean-up', value: p, target: '—', status: 'error' });

  process.stdout.write(table(rows) + '\n');
  if (peersTable !== undefined) process.stdout.write(`\n${peersTable}\n`);
  const failed = rows.filter((r) => r.status === 'error');
  const missed = rows.filter((r) => r.status === 'MISS');
  progress(`total ${fmtMs(now() - started)}; ${missed.length} MISS, ${failed.length} bench error(s)`);
  for (const r of failed) process.stderr.write(`bench error: ${r.section}: ${r.metric}: ${r.value}\n`);
  return failed.length > 0 ? 1 : 0;
}

// Never leave emperors (and their 1,000 sleeps) behind, however the bench ends.
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    progress(`${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}
setTimeout(() => {
  progress(`the whole bench exceeded ${fmtMs(GLOBAL_TIMEOUT_MS)}; cleaning up`);
  void cleanup().finally(() => process.exit(1));
}, GLOBAL_TIMEOUT_MS).unref();

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    void cleanup().finally(() => process.exit(1));
  },
);
