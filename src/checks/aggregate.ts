// A vassal's health is its worst check, as in Consul's health endpoints.
import type { CheckStatus } from '../config/index.js';

/** Best to worst. */
export const STATUS_ORDER: readonly CheckStatus[] = ['passing', 'warning', 'critical'];

/** The worst of the statuses; passing when there are none (no checks means nothing is failing). */
export function worstStatus(statuses: Iterable<CheckStatus>): CheckStatus {
  let worst: CheckStatus = 'passing';
  for (const status of statuses) {
    if (STATUS_ORDER.indexOf(status) > STATUS_ORDER.indexOf(worst)) worst = status;
    if (worst === 'critical') break;
  }
  return worst;
}
