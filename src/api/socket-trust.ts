// The CLI checks where the control socket lives before it believes what answers there. The
// emperor refuses a state directory another user could tamper with (src/state/trusted-dir.ts),
// but the CLI can be pointed anywhere (--state-dir /tmp by mistake): there another local user
// could put their own server at emperor.sock, make `emperor status` show whatever they like, and
// swallow the `stop` or `check fail` an operator's script sends. So, as ssh checks its keys: the
// socket must be a socket, owned by the directory's owner; the directory writable by nobody
// else; every parent owned by root or that owner and not writable by others unless sticky. The
// owner itself must be the caller or root, except for root, who may drive any user's emperor.
import fs from 'node:fs';
import path from 'node:path';
import { octal, writers } from '../state/trusted-dir.js';

export class UntrustedSocketError extends Error {
  override readonly name = 'UntrustedSocketError';
}


/**
 * Throws UntrustedSocketError when the socket or a directory above it could have been placed or
 * replaced by a user other than the emperor's (or root). A missing socket or directory is left to
 * the connection, which says "no emperor is running".
 */
export function checkSocketTrust(socketPath: string, euid = process.geteuid?.() ?? 0): void {
  let dir: string;
  let dirStat: fs.Stats;
  try {
    // The directory as the connection will reach it: links resolved.
    dir = fs.realpathSync(path.dirname(socketPath));
    dirStat = fs.statSync(dir);
  } catch {
    return;
  }
  const owner = dirStat.uid;
  const refuse = (why: string): never => {
    throw new UntrustedSocketError(`refusing to talk to ${socketPath}: ${why}; an emperor's state directory belongs to its user and nobody else can write to it (point --state-dir / EMPEROR_STATE_DIR at the emperor's own)`);
  };
  if (euid !== 0 && owner !== euid && owner !== 0) refuse(`its directory ${dir} is owned by uid ${owner}, neither you (uid ${euid}) nor root`);
  if (writers(dirStat.mode) !== undefined) refuse(`its directory ${dir} is writable by group or others (mode ${octal(dirStat.mode)})`);
  for (let p = path.dirname(dir); ; p = path.dirname(p)) {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      return; // not ours to see: the connection will say what is wrong
    }
    if (st.uid !== 0 && st.uid !== owner) refuse(`${p}, above it, is owned by uid ${st.uid}, who could replace the directory`);
    if (writers(st.mode) !== undefined && (st.mode & 0o1000) === 0) refuse(`${p}, above it, is writable by group or others without the sticky bit (mode ${octal(st.mode)})`);
    if (p === path.dirname(p)) break;
  }
  let sock: fs.Stats;
  try {
    sock = fs.lstatSync(path.join(dir, path.basename(socketPath)));
  } catch {
    return;
  }
  if (!sock.isSocket()) refuse('it is not a socket');
  if (sock.uid !== owner) refuse(`the socket is owned by uid ${sock.uid}, not by uid ${owner} who owns its directory`);
}
