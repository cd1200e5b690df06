import type { OriginInfo, TcpExportInfo } from '@fss/control';
import { humanizeNumber } from './humanize';

/** `NAME: PATH, SIZE, added|implicit, units fss0,fss1, export SOCKET[, device DEV (LOOP)]` */
export function formatOrigin(origin: OriginInfo): string {
  const units = origin.units.length > 0 ? origin.units.join(',') : '-';
  const kind = origin.explicit ? 'added' : 'implicit';
  const device = origin.device === undefined ? '' : `, device ${origin.device} (${origin.loop})`;
  return `${origin.name}: ${origin.path}, ${humanizeNumber(origin.size)}, ${kind}, units ${units}, export ${origin.export}${device}`;
}

/** `fss0: nbds://127.0.0.1:10809/fss0 (tls x509, verify peer, 0 clients)` */
export function formatTcpExport(tcp: TcpExportInfo): string {
  const verify = tcp.verifyPeer === true ? ', verify peer' : '';
  const plain = tcp.tls === 'none' ? 'no tls: plaintext' : `tls ${tcp.tls}`;
  return `${tcp.unit}: ${tcp.url} (${plain}${verify}, ${tcp.clients} clients)`;
}
