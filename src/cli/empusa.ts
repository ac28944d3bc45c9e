// `empusa`: the emperor's `service` commands under empusa's own name and usage, so scripts written
// for empusa run unchanged (`empusa --etcd-endpoint e:2379 --tree-root /foo service register …`,
// the options before or after the command, EMPUSA_* variables, `--ttl 30 --refresh-every 20`).
// Installed as the package's second bin entry (bin/empusa).
import { Command, type Help, type Option } from 'commander';
import { addEtcdOptions } from '../registries/etcd/options.js';
import { addServiceCommands } from './service.js';

/** empusa's help shows these options, spelled as its usage spells them; the rest stay hidden. */
const SHOWN: Readonly<Record<string, { term: string; description: string }>> = {
  '--etcd-endpoint': { term: '--etcd-endpoint HOST:PORT', description: '[required] [env EMPUSA_ETCD_ENDPOINT]' },
  '--etcd-protocol': { term: '--etcd-protocol TEXT', description: 'http or https [env EMPUSA_ETCD_PROTOCOL]' },
  '--tree-root': { term: '--tree-root TEXT', description: '[required] [env EMPUSA_TREE_ROOT]' },
};

const program = new Command('empusa')
  .usage('[OPTIONS] COMMAND [ARGS]...')
  .helpOption('--help', 'Show this message and exit.')
  .helpCommand(false)
  .showHelpAfterError();
// On the program, commander takes these options wherever they are written up to the first option
// it does not know; after that, `service` and its subcommands take them (they carry them too).
addEtcdOptions(program, { leaseTtl: false });
for (const option of program.options) {
  const shown = option.long ? SHOWN[option.long] : undefined;
  if (shown) option.description = shown.description;
  else option.hideHelp();
}
program.configureHelp({
  optionTerm: (option: Option) => (option.long && SHOWN[option.long]?.term) || option.flags,
  subcommandTerm: (cmd: Command) => cmd.name(),
} satisfies Partial<Help>);

addServiceCommands(program);

await program.parseAsync(process.argv);
