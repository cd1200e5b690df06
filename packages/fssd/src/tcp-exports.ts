/**
 * A unit's export over TCP (issue 14): backups from another machine. The unix socket stays;
 * this adds one NBD listener on exactly the address asked for, serving the same snapshot
 * read-only (the device is a snapshot: no write reaches it over any wire), normally with TLS
 * in TLS-required mode (@fss/nbd's starttls.ts):
 *
 *   tls x509   the certificate directory of qemu-nbd and nbdkit (ca-cert.pem,
 *              server-cert.pem, server-key.pem); verifyPeer: clients need a certificate
 *              signed by ca-cert.pem
 *   tls psk    a psktool key file (`username:hexkey` lines)
 *   tls none   plaintext; only when asked for by name (`fss export --insecure`), never a
 *              default, because anyone who reaches the port reads the whole snapshot
 *
 * Never started by default, never recorded in the state directory: a listener lives as long
 * as its unit and this daemon, and is not restarted with a persistent unit after a restart
 * (credentials are files the operator may have replaced; starting one is an explicit act).
 * Credentials are read once, when the listener starts, so a bad file fails the request, not
 * each client.
 */
import { isAbsolute } from 'node:path';
import type { TcpExportInfo, TcpExportRequest } from '@fss/control';
import { assert, type BlockDevice, FssError } from '@fss/core';
import { loadPskCredentials, loadX509Credentials, NbdServer, type NbdTlsCredentials } from '@fss/nbd';
import type { Log } from './log';

export interface TcpExport {
  info(): TcpExportInfo;
  clients(): number;
  /** Stops listening and disconnects its clients (requests in flight are answered first). */
  close(): Promise<void>;
}

export interface TcpExportOptions {
  /** The unit's name: the export's name, and the URL's path. */
  name: string;
  description: string;
  log: Log;
  /** Called with the TCP client count whenever one connects or leaves. */
  onClientsChanged?: (clients: number) => void;
}

/** Starts the listener `request` describes for `device` (read-only). */
export async function startTcpExport(
  request: TcpExportRequest,
  device: BlockDevice,
  options: TcpExportOptions,
): Promise<TcpExport> {
  assert(device.readOnly, 'TCP exports serve snapshots, which are read-only');
  assert(request.host !== '', 'a TCP export binds an explicit host');
  const tls = await loadCredentials(request);
  const server = new NbdServer({
    exports: [{ name: options.name, device, readOnly: true, description: options.description }],
    tls,
    log: (message) => options.log(`${options.name}: tcp: ${message}`),
    onConnectionCountChange: options.onClientsChanged,
  });
  const bound = await server.listen({ host: request.host, port: request.port });
  assert('port' in bound, 'a TCP listener has a port');
  const port = bound.port;
  const url = `${request.tls === 'none' ? 'nbd' : 'nbds'}://${urlHost(request.host)}:${port}/${options.name}`;
  options.log(`${options.name}: tcp: listening on ${url} (tls ${request.tls})`);
  return {
    info: () => ({
      unit: options.name,
      host: request.host,
      port,
      tls: request.tls,
      ...(request.tls === 'x509' ? { verifyPeer: request.verify_peer === true } : {}),
      url,
      clients: server.connectionCount,
    }),
    clients: () => server.connectionCount,
    close: () => server.close(),
  };
}

async function loadCredentials(request: TcpExportRequest): Promise<NbdTlsCredentials | undefined> {
  const absolute = (path: string | undefined, what: string): string => {
    if (path === undefined || !isAbsolute(path)) {
      throw new FssError('EINVAL', `${what} must be an absolute path`, { syscall: 'tcp-export', path });
    }
    return path;
  };
  switch (request.tls) {
    case 'x509':
      return loadX509Credentials(absolute(request.certs, 'the certificate directory'), {
        verifyPeer: request.verify_peer === true,
      });
    case 'psk':
      return loadPskCredentials(absolute(request.psk, 'the PSK key file'));
    case 'none':
      return undefined;
  }
}

/** An IPv6 address goes in brackets in a URL. */
function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
