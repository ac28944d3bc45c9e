// The vassal files the soak driver writes: a handful of kinds (healthy, flapping, crashing,
// never ready, stubborn, with grandchildren, ...) and invalid variants. Every app with a
// service carries its expected registration in its own environment (SOAK_SVC=<type>/<name>,
// PORT, SOAK_KIND), so the checker can tell from /proc alone what a live process should be
// registered as, whatever the emperor believes.
import path from 'node:path';
import { stringify } from 'yaml';
import { fixture } from '../test/support/paths.js';
import { PROBE_MARKER } from './procfs.js';
import { intIn, pick, type Rng } from './prng.js';

export const KINDS = ['web', 'flappy', 'ttl', 'crasher', 'family', 'stubborn', 'notify', 'neverready', 'silent', 'badcmd', 'worker'] as const;
export type Kind = (typeof KINDS)[number];

/** Kinds that can never pass readiness: registering one is always wrong. */
export const NEVER_READY: ReadonlySet<string> = new Set<Kind>(['neverready', 'silent', 'badcmd']);

const KIND_WEIGHTS: ReadonlyArray<readonly [Kind, number]> = [
  ['web', 5],
  ['flappy', 3],
  ['ttl', 2],
  ['crasher', 3],
  ['family', 2],
  ['stubborn', 2],
  ['notify', 2],
  ['neverready', 1],
  ['silent', 1],
  ['badcmd', 1],
  ['worker', 2],
];

export function kindFrom(r: number): Kind {
  const total = KIND_WEIGHTS.reduce((s, [, w]) => s + w, 0);
  let x = r * total;
  for (const [k, w] of KIND_WEIGHTS) {
    if (x < w) return k;
    x -= w;
  }
  return 'web';
}

/** Longest stop.timeout any generated file uses (part of the process bounds). */
export const MAX_STOP_TIMEOUT_MS = 1000;

export interface Generated {
  readonly kind: Kind;
  readonly content: string;
  /** Only for service kinds. */
  readonly port: number | undefined;
  readonly healthFile: string | undefined;
}

export interface GenContext {
  readonly soakApp: string;
  readonly healthDir: string;
  /** A port nobody listens on (fresh for each call). */
  freePort(): Promise<number>;
}

const HTTP_APP = fixture('http-app.js');
const node = process.execPath;

/**
 * One valid vassal file of `kind`. `rng` is consumed a fixed number of times whatever the kind,
 * so the action sequence does not depend on which branches ran.
 */
export async function generate(name: string, ext: 'yaml' | 'json', kind: Kind, rng: Rng, ctx: GenContext, keepPort?: number): Promise<Generated> {
  const r = Array.from({ length: 10 }, () => rng());
  const port = keepPort ?? (await ctx.freePort());
  const svcName = r[0]! < 0.3 ? `svc-${name}` : name;
  const type = pick(r[1]!, ['http', 'default', 'api']);
  const baseEnv = { PORT: String(port), SOAK_KIND: kind, SOAK_SVC: `${type}/${svcName}` };
  // The name is always explicit: a renamed file keeps its service (and SOAK_SVC stays true).
  const service: Record<string, unknown> = { name: svcName, port, type, tags: ['soak', `k-${kind}`], meta: { gen: String(intIn(r[2]!, 1, 99)) } };
  const backoff = { initial: '100ms', max: '800ms', reset_after: '2s', max_retries: 1000, max_restarts: { count: 1000, within: '1m' } };
  const stop = { timeout: `${intIn(r[3]!, 4, 10) * 100}ms` };
  let healthFile: string | undefined;
  let doc: Record<string, unknown>;
  switch (kind) {
    case 'web': {
      const checks: unknown[] = [r[4]! < 0.5 ? { http: `http://127.0.0.1:${port}/health`, interval: '500ms' } : { tcp: `127.0.0.1:${port}`, interval: '500ms' }];
      if (r[5]! < 0.3) checks.push({ name: 'probe', exec: ['/bin/sh', '-c', 'exit 0', PROBE_MARKER], interval: '1s' });
      if (r[6]! < 0.3) service.consul = { native_checks: true };
      doc = { command: [node, HTTP_APP], env: baseEnv, service, checks, backoff, stop };
      break;
    }
    case 'flappy': {
      healthFile = path.join(ctx.healthDir, name);
      service.deregister_when_critical = r[4]! < 0.6;
      doc = {
        command: [node, HTTP_APP],
        env: { ...baseEnv, HEALTH_FILE: healthFile },
        service,
        checks: [{ http: `http://127.0.0.1:${port}/health`, interval: '300ms' }],
        backoff,
        stop,
        ...(r[5]! < 0.3 ? { on_critical: { restart_after: intIn(r[6]!, 3, 8) } } : {}),
      };
      break;
    }
    case 'ttl':
      service.deregister_when_critical = r[4]! < 0.5;
      doc = { command: [node, HTTP_APP], env: baseEnv, service, checks: [{ name: 'beat', ttl: '3s' }], backoff, stop };
      break;
    case 'crasher':
      doc = {
        command: [node, ctx.soakApp],
        env: { ...baseEnv, CRASH_AFTER_MS: String(intIn(r[4]!, 8, 60) * 100), ...(r[5]! < 0.4 ? { GRANDCHILDREN: '1' } : {}) },
        service,
        checks: [{ tcp: `127.0.0.1:${port}`, interval: '500ms' }],
        backoff,
        stop,
      };
      break;
    case 'family':
      doc = {
        command: [node, ctx.soakApp],
        env: { ...baseEnv, GRANDCHILDREN: String(intIn(r[4]!, 1, 2)), STUBBORN_CHILD: r[5]! < 0.6 ? '1' : '0' },
        service,
        backoff,
        stop: { timeout: '500ms' },
      };
      break;
    case 'stubborn':
      doc = { command: [node, ctx.soakApp], env: { ...baseEnv, IGNORE_TERM: '1' }, service, backoff, stop };
      break;
    case 'notify':
      doc = {
        command: [node, ctx.soakApp],
        env: { ...baseEnv, NOTIFY_AFTER_MS: String(intIn(r[4]!, 1, 6) * 100) },
        service,
        start: { ready: { notify: true }, timeout: '5s' },
        backoff,
        stop,
      };
      break;
    case 'neverready': {
      const dead = await ctx.freePort();
      doc = {
        command: [node, ctx.soakApp],
        env: baseEnv,
        service,
        start: { ready: { tcp: `127.0.0.1:${dead}`, interval: '100ms' }, timeout: `${intIn(r[4]!, 4, 8) * 100}ms` },
        backoff: { initial: '200ms', max: '1s', max_retries: intIn(r[5]!, 1, 4) },
        stop,
      };
      break;
    }
    case 'silent':
      doc = {
        command: [node, ctx.soakApp],
        env: { ...baseEnv, NO_LISTEN: '1' },
        service,
        start: { timeout: '500ms' },
        backoff: { initial: '200ms', max: '1s', max_retries: intIn(r[5]!, 1, 4) },
        stop,
      };
      break;
    case 'badcmd':
      doc = { command: ['/nonexistent/soak-missing-binary'], env: baseEnv, service, backoff: { initial: '200ms', max: '400ms', max_retries: 2 }, stop };
      break;
    case 'worker':
      doc = { command: 'sleep 3600 & exec sleep 3600', shell: true, env: { SOAK_KIND: kind }, backoff, stop };
      break;
  }
  return { kind, content: ext === 'json' ? JSON.stringify(doc, null, 2) : stringify(doc), port: kind === 'worker' ? undefined : port, healthFile };
}

/** An invalid file: syntax errors, unknown fields, bad values. */
export function invalidContent(ext: 'yaml' | 'json', r: number): string {
  const node = JSON.stringify(process.execPath);
  const variants =
    ext === 'json'
      ? [
          `{"command": [${node}, `,
          `{"command": [${node}], "colour": "red"}`,
          `{"command": [${node}], "stop": {"timeout": "ten"}}`,
          `{"command": "sleep 1"}`,
          `{"command": [${node}], "service": {"port": 70000}}`,
        ]
      : [
          `command: [${node}, "unterminated\n`,
          `command: [${node}]\ncolour: red\n`,
          `command: [${node}]\nstop: { timeout: ten }\n`,
          `command: sleep 1\n`,
          `command: [${node}]\nservice: { port: 70000 }\n`,
          `command: [${node}]\nbackoff: { initial: 2s, max: 1s }\n`,
        ];
  return pick(r, variants);
}
