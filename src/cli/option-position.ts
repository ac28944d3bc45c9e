// Connection options (etcd, Consul) in either position: before the command or after it.
//
// empusa's documented form puts its etcd options before the command
// (`empusa --etcd-endpoint e:2379 --tree-root /foo service register …`), and scripts written for it
// must run unchanged as `emperor …`. commander gives options written before a command name to the
// program (here: to the default command, `run`, which then asks for --vassals). So, before
// commander parses, options written ahead of the name of a command that accepts them are moved
// behind that name: `emperor --etcd-endpoint X service register` is parsed as
// `emperor service --etcd-endpoint X register`. That command (or group) then validates them as its
// own, with commander's own errors for options it does not take.
//
// Use: a top-level command marks itself with optionsAlsoBefore(cmd) after adding its options
// (its subcommands read them with mergedOptions, which also sees the group's), and the program is
// parsed with hoistLeadingOptions(program, argv) instead of argv.
import type { Command, Option } from 'commander';

/** Top-level commands whose own options may also be written before their name. */
const accepting = new WeakSet<Command>();

/** Let `cmd`'s options (as defined so far and later) also be written before its name. */
export function optionsAlsoBefore<C extends Command>(cmd: C): C {
  accepting.add(cmd);
  return cmd;
}

function findOption(cmd: Command, flag: string): Option | undefined {
  return cmd.options.find((o) => o.long === flag || o.short === flag);
}

/**
 * `args` (the user's arguments, without node and the script) with the options written before the
 * name of an accepting command moved right behind that name. Anything else is returned as it is:
 * no command name after the options (the default command gets them), an option no accepting
 * command knows, or a command that does not accept options before its name.
 */
export function hoistLeadingOptions(program: Command, args: readonly string[]): string[] {
  const commands = program.commands.filter((c) => accepting.has(c));
  let i = 0;
  while (i < args.length) {
    const arg = args[i]!;
    if (arg === '--' || arg.length < 2 || !arg.startsWith('-')) break;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const option = commands.map((c) => findOption(c, flag)).find((o) => o !== undefined);
    if (!option) return [...args];
    i++;
    // Its value is the next argument, whatever it looks like (as commander reads it).
    if (eq < 0 && option.required) {
      if (i >= args.length) return [...args];
      i++;
    } else if (eq < 0 && option.optional && i < args.length && !args[i]!.startsWith('-')) i++;
  }
  if (i === 0 || i >= args.length) return [...args];
  const name = args[i]!;
  const target = commands.find((c) => c.name() === name || c.aliases().includes(name));
  if (!target) return [...args];
  return [name, ...args.slice(0, i), ...args.slice(i + 1)];
}

/**
 * The options of `cmd` and of the groups above it, nearest first: connection options sit on a
 * group and on each of its subcommands, and commander gives a value to whichever parsed it.
 */
export function mergedOptions<T extends object = Record<string, unknown>>(cmd: Command): T {
  const merged: Record<string, unknown> = {};
  for (let c: Command | null = cmd; c; c = c.parent) {
    for (const [k, v] of Object.entries(c.opts())) if (v !== undefined && merged[k] === undefined) merged[k] = v;
  }
  return merged as T;
}
