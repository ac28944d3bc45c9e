// Boolean flags read from the environment. commander turns a boolean option on whenever its
// variable is merely present, so EMPEROR_TYRANT_ALLOW_ROOT=false switched the option ON. Every
// boolean option that has an environment variable is re-read here, strictly, before its action.
import type { Command, Option } from 'commander';

const TRUE = new Set(['true', '1', 'yes']);
const FALSE = new Set(['false', '0', 'no']);

export class EnvBooleanError extends Error {
  override readonly name = 'EnvBooleanError';
}

/** true/false/1/0/yes/no, case-insensitive; anything else (the empty string too) is an error naming the variable. */
export function parseEnvBoolean(name: string, value: string): boolean {
  const v = value.trim().toLowerCase();
  if (TRUE.has(v)) return true;
  if (FALSE.has(v)) return false;
  throw new EnvBooleanError(`${name}: expected true or false (also 1/0, yes/no), got ${JSON.stringify(value)}`);
}

const isBooleanWithEnv = (o: Option): o is Option & { envVar: string } => o.envVar !== undefined && !o.required && !o.optional;

/**
 * Install on the root command: before any action runs, every boolean option of the command
 * about to run (and of its parents) whose value came from the environment is replaced by the
 * strictly parsed value. A flag given on the command line wins, as for every other option.
 * A bad value ends the process with exit code 2 (a usage error) and a message naming the variable.
 */
export function strictBooleanEnv(program: Command, env: NodeJS.ProcessEnv = process.env): void {
  program.hook('preAction', (_root, action) => {
    for (let cmd: Command | null = action; cmd; cmd = cmd.parent) {
      for (const option of cmd.options.filter(isBooleanWithEnv)) {
        const key = option.attributeName();
        if (cmd.getOptionValueSource(key) !== 'env') continue;
        try {
          // A --no-X option's variable says "X is off": EMPEROR_NO_CGROUPS=true turns cgroups off.
          const value = parseEnvBoolean(option.envVar, env[option.envVar] ?? '');
          cmd.setOptionValueWithSource(key, option.negate ? !value : value, 'env');
        } catch (err) {
          if (!(err instanceof EnvBooleanError)) throw err;
          process.stderr.write(`emperor: ${err.message}\n`);
          process.exit(2);
        }
      }
    }
  });
}
