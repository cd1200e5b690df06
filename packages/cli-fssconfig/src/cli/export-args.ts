/**
 * The arguments of `fss export` (issue 14: backups from another machine):
 *
 *   fss export fssN --tcp ADDR:PORT (--tls-certs DIR [--tls-verify-peer] | --tls-psk FILE | --insecure)
 *   fss export --stop fssN
 *
 * in any order. ADDR is an IPv4 address, a host name, or an IPv6 address in brackets
 * (`[::1]:10809`); there is no default address and no default port (10809 is NBD's). Exactly
 * one of --tls-certs, --tls-psk and --insecure: TLS is the rule, plaintext is asked for by
 * name. DIR and FILE are resolved here, against the caller's directory, because fssd reads
 * them from its own.
 */
import { resolve } from 'node:path';
import type { TcpExportRequest } from '@fss/control';
import { FssError } from '@fss/core';

export type ExportArgs =
  | { readonly kind: 'start'; readonly request: Omit<TcpExportRequest, 'op'> }
  | { readonly kind: 'stop'; readonly unit: string };

/** What was wrong, for `fss: export: DETAIL` (EINVAL); `usage` for a shape that is not the synopsis. */
export type ExportArgsError = FssError | 'usage';

/** Parses `fss export`'s arguments; returns an FssError (EINVAL) for a bad value, 'usage' for a bad shape. */
export function parseExportArgs(args: readonly string[]): ExportArgs | ExportArgsError {
  let unit: string | undefined;
  let stop = false;
  let tcp: string | undefined;
  let certs: string | undefined;
  let psk: string | undefined;
  let insecure = false;
  let verifyPeer = false;
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index] as string;
    const eq = arg.indexOf('=');
    const flag = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = flag === arg ? undefined : arg.slice(eq + 1);
    const value = (): string | undefined => inline ?? args[++index];
    if (flag === '--stop' && inline === undefined) stop = true;
    else if (flag === '--tcp' && tcp === undefined) tcp = value();
    else if (flag === '--tls-certs' && certs === undefined) certs = value();
    else if (flag === '--tls-psk' && psk === undefined) psk = value();
    else if (flag === '--tls-verify-peer' && inline === undefined) verifyPeer = true;
    else if (flag === '--insecure' && inline === undefined) insecure = true;
    else if (arg.startsWith('-') || unit !== undefined) return 'usage';
    else unit = arg;
    if ([tcp, certs, psk].includes('')) return 'usage';
  }
  if (unit === undefined) return 'usage';
  if (stop) {
    const extra = tcp !== undefined || certs !== undefined || psk !== undefined || insecure || verifyPeer;
    return extra ? 'usage' : { kind: 'stop', unit };
  }
  if (tcp === undefined) return 'usage';
  const address = parseTcpAddress(tcp);
  if (address instanceof FssError) return address;
  const chosen = [certs !== undefined, psk !== undefined, insecure].filter(Boolean).length;
  if (chosen !== 1) {
    return invalid(
      chosen === 0
        ? 'a TCP export needs TLS: --tls-certs DIR or --tls-psk FILE (--insecure for plaintext)'
        : 'choose one of --tls-certs, --tls-psk and --insecure',
    );
  }
  if (verifyPeer && certs === undefined) return invalid('--tls-verify-peer goes with --tls-certs');
  const base = { unit, host: address.host, port: address.port };
  if (certs !== undefined) {
    return {
      kind: 'start',
      request: { ...base, tls: 'x509', certs: resolve(certs), verify_peer: verifyPeer },
    };
  }
  if (psk !== undefined) return { kind: 'start', request: { ...base, tls: 'psk', psk: resolve(psk) } };
  return { kind: 'start', request: { ...base, tls: 'none' } };
}

/** `HOST:PORT` or `[IPV6]:PORT`, port 0..65535 (0: fssd picks a free one and says which). */
export function parseTcpAddress(text: string): { host: string; port: number } | FssError {
  const match =
    /^\[([0-9A-Fa-f:.%a-zA-Z]+)\]:([0-9]{1,5})$/.exec(text) ?? /^([^:[\]]+):([0-9]{1,5})$/.exec(text);
  const port = match === null ? Number.NaN : Number(match[2]);
  if (match === null || !(port >= 0 && port <= 65535)) {
    return invalid(
      `--tcp ${text}: not ADDR:PORT with a port in 0..65535 (e.g. 192.0.2.10:10809, [::1]:10809)`,
    );
  }
  return { host: match[1] as string, port };
}

function invalid(detail: string): FssError {
  return new FssError('EINVAL', detail, { syscall: 'export' });
}
