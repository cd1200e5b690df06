/**
 * The peers fss is measured against, each serving its own copy of the image over a unix
 * socket for the whole run (started once, so neither pays start-up inside a measurement):
 *
 *   nbdkit file     `nbdkit -f --exit-with-parent -U SOCK file PATH`: nbdkit's defaults
 *                   (16 threads, buffered pread/pwrite through the page cache).
 *   qemu-nbd        `qemu-nbd --cache=none --format=raw --persistent --shared=16 -k SOCK PATH`:
 *                   O_DIRECT as fss's origin is, qemu's default aio=threads; --persistent keeps
 *                   it up between clients, --shared lets nbdcopy open 4 connections.
 *
 * Both advertise CAN_MULTI_CONN, as fss's exports do, so nbdcopy uses the same connection
 * count everywhere.
 */
import { join } from 'node:path';
import type { Cleanup } from './cleanup';
import { type Server, startServer } from './processes';

export type PeerName = 'nbdkit' | 'qemu-nbd';

export interface Peer {
  readonly name: PeerName;
  /** The device or file it serves. */
  readonly path: string;
  readonly socketPath: string;
  readonly server: Server;
}

export async function startNbdkit(cleanup: Cleanup, path: string, dir: string): Promise<Peer> {
  const socketPath = join(dir, 'nbdkit.sock');
  const server = await startServer(cleanup, {
    name: 'nbdkit',
    command: 'nbdkit',
    args: ['-f', '--exit-with-parent', '-U', socketPath, 'file', path],
    socketPath,
  });
  return { name: 'nbdkit', path, socketPath, server };
}

export async function startQemuNbd(cleanup: Cleanup, path: string, dir: string): Promise<Peer> {
  const socketPath = join(dir, 'qemu-nbd.sock');
  const server = await startServer(cleanup, {
    name: 'qemu-nbd',
    command: 'qemu-nbd',
    args: ['--cache=none', '--format=raw', '--persistent', '--shared=16', '-k', socketPath, path],
    socketPath,
  });
  return { name: 'qemu-nbd', path, socketPath, server };
}

/** The NBD URI libnbd clients (nbdcopy, fio's nbd engine) take for a unix socket. */
export function nbdUri(socketPath: string): string {
  return `nbd+unix:///?socket=${socketPath}`;
}
