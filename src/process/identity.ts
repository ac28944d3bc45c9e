// Who a vassal (and its exec probes) runs as, when the emperor runs as root and switches users.

export interface Identity {
  readonly uid: number;
  readonly gid: number;
  /** passwd name of uid: its supplementary groups are set up, and USER/LOGNAME/HOME exported. */
  readonly user: string | null;
  readonly home: string | null;
}

/**
 * setpriv arguments that switch to `id` before exec: real and effective ids, and the user's
 * own supplementary groups (or none, for a uid with no passwd entry, so root's never leak).
 */
export function identityArgs(id: Identity): string[] {
  return ['--reuid', String(id.uid), '--regid', String(id.gid), ...(id.user ? ['--init-groups'] : ['--clear-groups'])];
}

/** The login variables a program expects to match the user it runs as. */
export function identityEnv(id: Identity): Record<string, string> {
  if (!id.user) return {};
  return { USER: id.user, LOGNAME: id.user, ...(id.home ? { HOME: id.home } : {}) };
}
