import type { OriginInfo } from '@fss/control';
import { humanizeNumber } from './humanize';

/** `NAME: PATH, SIZE, added|implicit, units fss0,fss1, export SOCKET[, device DEV (LOOP)]` */
export function formatOrigin(origin: OriginInfo): string {
  const units = origin.units.length > 0 ? origin.units.join(',') : '-';
  const kind = origin.explicit ? 'added' : 'implicit';
  const device = origin.device === undefined ? '' : `, device ${origin.device} (${origin.loop})`;
  return `${origin.name}: ${origin.path}, ${humanizeNumber(origin.size)}, ${kind}, units ${units}, export ${origin.export}${device}`;
}
