import { DEFAULT_PROBE_CONCURRENCY } from '../checks/budget.js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ApiError, callApi, NoEmperorError, SocketDeniedError } from '../api/client.js';
import { SocketPathError } from '../api/socket-path.js';
import { UntrustedSocketError } from '../api/socket-trust.js';
import { parseDuration } from '../config/duration.js';
import type { EmperorStatus, VassalStatus } from '../emperor/emperor.js';
import { defaultLogsDir, defaultStateDir, socketPathIn } from './defaults.js';
import { formatStatusTable, formatVassal } from './format.js';
import { runEmperor } from './run.js';
import { parseListen } from '../metrics/listen.js';
import { addEtcdOptions, EtcdConfigError, resolveEtcdConfig, type EtcdCliOptions, type EtcdConfig } from '../registries/etcd/options.js';
import { addServiceCommands } from './service.js';
import { addConsulCommands } from './consul.js';
import { addLogsCommand } from './logs.js';
import { ConsulConfigError } from '../consul/connection.js';
import { addConsulOptions, resolveConsulConfig, type ConsulCliOptions, type ConsulConfig } from '../registries/consul/options.js';
import { strictBooleanEnv } from './env-booleans.js';
import { hoistLeadingOptions, optionsAlsoBefore } from './option-position.js';
import { nodeNameProblem } from '../fleet/keys.js';
import { addFleetCommands } from './fleet.js';
import os from 'node:os';
import { DashboardOptionError, resolveDashboardOptions, type DashboardOptions } from '../dashboard/options.js';

function durationArg(flag: string) {
  return (value: string): number => {
    try {
      return parseDuration(value);
    } catch (err) {
      throw new InvalidArgumentError(`${flag}: ${(err as Error).message}`);
    }
  };
}

const stateDirOption = (): Option =>
  new Option('--state-dir <dir>', 'state directory of the emperor to talk to').env('EMPEROR_STATE_DIR').default(defaultStateDir());

/** Turn API failures into one clear line and an exit code, never a stack trace. */
async function withApi(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof NoEmperorError || err instanceof ApiError || err instanceof SocketDeniedError || err instanceof UntrustedSocketError || err instanceof SocketPathError) {
      process.stderr.write(`emperor: ${err.message}\n`);
      process.exitCode = err instanceof NoEmperorError ? 3 : err instanceof SocketDeniedError || err instanceof UntrustedSocketError ? 4 : err instanceof SocketPathError ? 2 : 1;
      return;
    }
    throw err;
  }
}

const program = new Command();
program
  .name('emperor')
  .description('Supervise a directory of app files: drop a file to deploy, edit to reload, delete to stop.')
  .showHelpAfterError();
strictBooleanEnv(program);

const run = program
  .command('run', { isDefault: true })
  .description('run the emperor on a vassals directory (the default command)')
  .addOption(new Option('--vassals <dir>', 'directory of vassal files').env('EMPEROR_VASSALS').makeOptionMandatory())
  .addOption(stateDirOption().default(defaultStateDir()).env('EMPEROR_STATE_DIR'))
  .addOption(new Option('--logs-dir <dir>', 'per-vassal output logs').env('EMPEROR_LOGS_DIR').default(defaultLogsDir()))
  .addOption(new Option('--log-format <format>', 'emperor log format').choices(['human', 'json']).env('EMPEROR_LOG_FORMAT').default('human'))
  .addOption(new Option('--log-level <level>', 'emperor log level').choices(['error', 'warn', 'info', 'debug']).env('EMPEROR_LOG_LEVEL').default('info'))
  .addOption(new Option('--mirror-output', "copy vassals' output lines into the emperor log").env('EMPEROR_MIRROR_OUTPUT'))
  .addOption(
    new Option('--mirror-rate <lines>', 'with --mirror-output: at most this many lines per second per vassal (bursts of 5 s worth)')
      .env('EMPEROR_MIRROR_RATE')
      .argParser((v: string) => {
        const n = Number(v);
        if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`--mirror-rate: expected a whole number of lines per second (at least 1), got "${v}"`);
        return n;
      })
      .default(100),
  )
  .addOption(
    new Option('--rescan-interval <duration>', 'full directory rescan period (repairs missed events)')
      .env('EMPEROR_RESCAN_INTERVAL')
      .argParser(durationArg('--rescan-interval'))
      .default(10_000, '10s'),
  )
  .addOption(
    new Option('--settle <duration>', 'quiet time after a file event before the file is read')
      .env('EMPEROR_SETTLE')
      .argParser(durationArg('--settle'))
      .default(20, '20ms'),
  )
  .option('--no-watch', 'do not use file-change events; find changes by rescanning only (network filesystems)')
  .addOption(new Option('--tyrant', 'run each vassal as the owner of its file (uid, gid, groups, HOME, USER); needs root').env('EMPEROR_TYRANT'))
  .addOption(new Option('--tyrant-allow-root', 'in tyrant mode, also accept root-owned vassal files').env('EMPEROR_TYRANT_ALLOW_ROOT'))
  .addOption(new Option('--uwsgi-bin <path>', 'the uWSGI binary that runs .ini vassals (`uwsgi --ini FILE`)').env('EMPEROR_UWSGI_BIN').default('uwsgi'))
  .addOption(new Option('--fleet', 'also run fleet vassals placed on this node through etcd (emperor fleet deploy); needs --etcd-endpoint and --tree-root').env('EMPEROR_FLEET'))
  .addOption(
    new Option('--node-name <name>', 'this host\'s name in the fleet (default: the host name)').env('EMPEROR_NODE_NAME').argParser((v: string) => {
      const problem = nodeNameProblem(v);
      if (problem !== undefined) throw new InvalidArgumentError(`--node-name: ${problem}`);
      return v;
    }),
  )
  .addOption(new Option('--fleet-allow-root', 'let fleet vassals run as root (their specs come over the network: off by default)').env('EMPEROR_FLEET_ALLOW_ROOT'))
  .addOption(new Option('--no-cgroups', 'contain vassals by process group only, even where a cgroup per vassal is possible').env('EMPEROR_NO_CGROUPS'))
  .addOption(
    new Option('--metrics <listen>', 'serve Prometheus metrics at http://LISTEN/metrics (HOST:PORT, :PORT or PORT; loopback unless a host is named)')
      .env('EMPEROR_METRICS')
      .argParser((v: string) => {
        try {
          return parseListen(v);
        } catch (err) {
          throw new InvalidArgumentError(`--metrics: ${(err as Error).message}`);
        }
      }),
  )
  .addOption(
    new Option('--http <listen>', 'serve the live dashboard at http://LISTEN/ (HOST:PORT, :PORT or PORT; loopback unless a host is named)')
      .env('EMPEROR_HTTP')
      .argParser((v: string) => {
        try {
          return parseListen(v);
        } catch (err) {
          throw new InvalidArgumentError(`--http: ${(err as Error).message}`);
        }
      }),
  )
  .addOption(
    new Option('--http-token-file <file>', 'token the dashboard asks for (bearer or login form); required when --http is not loopback').env('EMPEROR_HTTP_TOKEN_FILE'),
  )
  .addOption(
    new Option('--anti-entropy-interval <duration>', 'how often registries are compared with what they should hold')
      .env('EMPEROR_ANTI_ENTROPY_INTERVAL')
      .argParser(durationArg('--anti-entropy-interval'))
      .default(5000, '5s'),
  )
  .addOption(
    new Option('--deregister-timeout <duration>', 'longest a stop waits for deregistration')
      .env('EMPEROR_DEREGISTER_TIMEOUT')
      .argParser(durationArg('--deregister-timeout'))
      .default(2000, '2s'),
  )
  .addOption(
    new Option('--check-concurrency <n>', 'most health-check probes running at once, over all vassals')
      .env('EMPEROR_CHECK_CONCURRENCY')
      .argParser((v: string) => {
        const n = Number(v);
        if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`--check-concurrency: expected a whole number ≥ 1, got "${v}"`);
        return n;
      })
      .default(DEFAULT_PROBE_CONCURRENCY),
  );
addEtcdOptions(run);
addConsulOptions(run);
// `emperor --etcd-endpoint e:2379 --tree-root /x run --vassals d` (options before the command name).
optionsAlsoBefore(run);
run.action(
  async (
    o: {
      vassals: string;
      stateDir: string;
      logsDir: string;
      logFormat: 'human' | 'json';
      logLevel: string;
      mirrorOutput?: boolean;
      mirrorRate: number;
      rescanInterval: number;
      settle: number;
      watch: boolean;
      metrics?: { host: string; port: number };
      http?: { host: string; port: number };
      httpTokenFile?: string;
      antiEntropyInterval: number;
      deregisterTimeout: number;
      checkConcurrency: number;
      tyrant?: boolean;
      tyrantAllowRoot?: boolean;
      cgroups: boolean;
      uwsgiBin: string;
      fleet?: boolean;
      nodeName?: string;
      fleetAllowRoot?: boolean;
    } & EtcdCliOptions &
      ConsulCliOptions,
  ) => {
    if (o.rescanInterval < 100) throw new InvalidArgumentError('--rescan-interval: expected at least 100ms');
    if (!o.fleet && (o.nodeName !== undefined || o.fleetAllowRoot)) {
      process.stderr.write(`emperor: ${o.nodeName !== undefined ? '--node-name' : '--fleet-allow-root'} only makes sense with --fleet\n`);
      process.exit(2);
    }
    let node = o.nodeName;
    if (o.fleet && node === undefined) {
      node = os.hostname();
      const problem = nodeNameProblem(node);
      if (problem !== undefined) {
        process.stderr.write(`emperor: the host name ${JSON.stringify(node)} cannot be a fleet node name (${problem}): give --node-name\n`);
        process.exit(2);
      }
    }
    let etcd: EtcdConfig | undefined;
    let consul: ConsulConfig | undefined;
    let dashboard: DashboardOptions | undefined;
    try {
      etcd = resolveEtcdConfig(o);
      consul = resolveConsulConfig(o, process.env);
      dashboard = resolveDashboardOptions(o.http, o.httpTokenFile);
    } catch (err) {
      if (!(err instanceof EtcdConfigError) && !(err instanceof ConsulConfigError) && !(err instanceof DashboardOptionError)) throw err;
      process.stderr.write(`emperor: ${err.message}\n`);
      process.exit(2);
    }
    try {
      await runEmperor({
        vassals: o.vassals,
        stateDir: o.stateDir,
        logsDir: o.logsDir,
        logFormat: o.logFormat,
        logLevel: o.logLevel,
        mirrorOutput: Boolean(o.mirrorOutput),
        mirrorRate: o.mirrorRate,
        settleMs: o.settle,
        rescanMs: o.rescanInterval,
        useEvents: o.watch,
        metrics: o.metrics,
        dashboard,
        etcd,
        consul,
        antiEntropyMs: o.antiEntropyInterval,
        deregisterTimeoutMs: o.deregisterTimeout,
        checkConcurrency: o.checkConcurrency,
        tyrant: Boolean(o.tyrant),
        tyrantAllowRoot: Boolean(o.tyrantAllowRoot),
        cgroups: o.cgroups,
        uwsgiBin: o.uwsgiBin,
        fleet: o.fleet && node !== undefined ? { node, allowRoot: Boolean(o.fleetAllowRoot) } : undefined,
      });
    } catch (err) {
      process.stderr.write(`emperor: ${(err as Error).message}\n`);
      // A state directory whose socket path cannot exist is a bad flag; the rest is a refusal.
      process.exit(err instanceof SocketPathError ? 2 : 1);
    }
  },
);

program
  .command('status [name]')
  .description('show every vassal (a table), or one vassal in detail')
  .option('--json', 'print JSON')
  .addOption(stateDirOption())
  .action((name: string | undefined, o: { json?: boolean; stateDir: string }) =>
    withApi(async () => {
      const sock = socketPathIn(o.stateDir);
      if (name) {
        const v = await callApi<VassalStatus>(sock, 'GET', `/v1/vassals/${encodeURIComponent(name)}`);
        process.stdout.write((o.json ? JSON.stringify(v, null, 2) : formatVassal(v)) + '\n');
      } else {
        const s = await callApi<EmperorStatus>(sock, 'GET', '/v1/status');
        process.stdout.write((o.json ? JSON.stringify(s, null, 2) : formatStatusTable(s)) + '\n');
      }
    }),
  );

for (const [action, help] of [
  ['start', 'start a vassal (clears fatal)'],
  ['stop', 'stop a vassal; it stays stopped until started or its file changes'],
  ['restart', 'stop then start a vassal with its current spec'],
] as const) {
  program
    .command(`${action} <name>`)
    .description(help)
    .option('--json', 'print the resulting status as JSON')
    .addOption(stateDirOption())
    .action((name: string, o: { json?: boolean; stateDir: string }) =>
      withApi(async () => {
        const v = await callApi<VassalStatus>(socketPathIn(o.stateDir), 'POST', `/v1/vassals/${encodeURIComponent(name)}/${action}`);
        process.stdout.write(o.json ? JSON.stringify(v, null, 2) + '\n' : `${v.name}: ${v.state}${v.lastExit && v.state !== 'running' ? ` (last exit: ${v.lastExit.reason})` : ''}\n`);
      }),
    );
}

program
  .command('reload [name]')
  .description('re-read a vassal file and restart it gracefully; without a name, all vassals (like SIGHUP)')
  .option('--json', 'print the resulting status as JSON')
  .addOption(stateDirOption())
  .action((name: string | undefined, o: { json?: boolean; stateDir: string }) =>
    withApi(async () => {
      const sock = socketPathIn(o.stateDir);
      if (name) {
        const v = await callApi<VassalStatus>(sock, 'POST', `/v1/vassals/${encodeURIComponent(name)}/reload`);
        process.stdout.write(o.json ? JSON.stringify(v, null, 2) + '\n' : `${v.name}: ${v.state}\n`);
      } else {
        const s = await callApi<EmperorStatus>(sock, 'POST', '/v1/reload');
        process.stdout.write(o.json ? JSON.stringify(s, null, 2) + '\n' : formatStatusTable(s) + '\n');
      }
    }),
  );

addLogsCommand(program, stateDirOption, withApi);

program
  .command('reopen-logs')
  .description("close and reopen every vassal's log file (after an external logrotate moved them; same as SIGUSR1)")
  .addOption(stateDirOption())
  .action((o: { stateDir: string }) =>
    withApi(async () => {
      const r = await callApi<{ reopened: number }>(socketPathIn(o.stateDir), 'POST', '/v1/reopen-logs');
      process.stdout.write(`reopened ${r.reopened} vassal log(s)\n`);
    }),
  );

program
  .command('check <result> <name> [check]')
  .description('report a ttl check result for a vassal: pass, warn or fail (CHECK may be omitted when it has one ttl check)')
  .option('--note <text>', 'output to record with the result')
  .option('--json', 'print the check state as JSON')
  .addOption(stateDirOption())
  .action((result: string, name: string, check: string | undefined, o: { note?: string; json?: boolean; stateDir: string }) =>
    withApi(async () => {
      if (!['pass', 'warn', 'fail'].includes(result)) {
        process.stderr.write(`emperor: check: expected pass, warn or fail, got "${result}"\n`);
        process.exitCode = 2;
        return;
      }
      const q = new URLSearchParams();
      if (check) q.set('check', check);
      if (o.note !== undefined) q.set('note', o.note);
      const st = await callApi<{ name: string; status: string }>(socketPathIn(o.stateDir), 'POST', `/v1/vassals/${encodeURIComponent(name)}/check/${result}?${q.toString()}`);
      process.stdout.write(o.json ? JSON.stringify(st, null, 2) + '\n' : `${name}: check ${st.name} ${st.status}\n`);
    }),
  );

addServiceCommands(program);
addFleetCommands(program);
addConsulCommands(program);

// Options before a command name go to that command (empusa's `--etcd-endpoint … service register`).
await program.parseAsync(hoistLeadingOptions(program, process.argv.slice(2)), { from: 'user' });
