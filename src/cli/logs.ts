// `emperor logs [NAME...] [-f] [--lines N]`: vassal output read back through the control socket
// (the emperor owns the log files and knows when it rotates or reopens them).
import { InvalidArgumentError, type Command, type Option } from 'commander';
import { streamApi } from '../api/client.js';
import { DEFAULT_LOG_LINES, MAX_LOG_LINES } from '../api/log-session.js';
import { socketPathIn } from './defaults.js';

export function addLogsCommand(program: Command, stateDirOption: () => Option, withApi: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('logs [names...]')
    .description(`print the last lines of vassals' output (default ${DEFAULT_LOG_LINES}); several names or none (all vassals) prefix each line with its vassal`)
    .option('-f, --follow', 'keep printing lines as they are written (across log rotation) until Ctrl-C')
    .option(
      '-n, --lines <n>',
      'how many lines back to start, per vassal',
      (v: string) => {
        if (!/^\d+$/.test(v.trim()) || Number(v) > MAX_LOG_LINES) throw new InvalidArgumentError(`--lines: expected a whole number from 0 to ${MAX_LOG_LINES}, got "${v}"`);
        return Number(v);
      },
      DEFAULT_LOG_LINES,
    )
    .addOption(stateDirOption())
    .action((names: string[], o: { follow?: boolean; lines: number; stateDir: string }) =>
      withApi(async () => {
        const q = new URLSearchParams();
        for (const n of names) q.append('name', n);
        q.set('lines', String(o.lines));
        if (o.follow) q.set('follow', '1');
        const prefixed = names.length !== 1;
        const out: string[] = [];
        let flushing = false;
        // Lines are written in batches: a burst of thousands is one write, not thousands.
        const flush = (): void => {
          flushing = false;
          if (out.length > 0) process.stdout.write(out.splice(0).join(''));
        };
        const stream = streamApi(socketPathIn(o.stateDir), `/v1/logs?${q.toString()}`, (item) => {
          const { vassal, line, skipped } = item as { vassal?: string; line?: string; skipped?: number };
          if (skipped !== undefined) out.push(`emperor: ${skipped} line(s) skipped: this reader fell behind\n`);
          else out.push(prefixed ? `${vassal} | ${line}\n` : `${line}\n`);
          if (!flushing) {
            flushing = true;
            setImmediate(flush);
          }
        });
        // Ctrl-C ends a follow cleanly: what was received is printed, and the exit code is 0.
        const stop = (): void => stream.cancel();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          await stream.done;
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          flush();
        }
      }),
    );
}
