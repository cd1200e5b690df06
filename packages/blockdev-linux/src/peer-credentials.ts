/**
 * Who is on the other end of a unix socket: SO_PEERCRED (the pid, uid and gid the kernel
 * recorded when the peer called connect(2)), read with getsockopt(2) on the accepted socket's
 * descriptor. Modes on the socket file and its directory are the first fence; this is the
 * second, and the one a mistaken chmod or a socket passed to another process cannot lower:
 * fssd serves only its own user and root (SPEC §4, issue 11 item 6).
 *
 * Node does not expose getsockopt, so it goes through koffi. The descriptor of a Node
 * `net.Socket` is its handle's `fd` (a libuv pipe, -1 until connected, absent on Windows).
 */
import type { Socket } from 'node:net';
import { FssError } from '@fss/core';
import koffi from 'koffi';
import { errnoError } from './errors';

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
/** struct ucred: pid_t pid, uid_t uid, gid_t gid (three 32-bit fields). */
const UCRED_BYTES = 12;

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

type GetSockOpt = (fd: number, level: number, name: number, value: Uint8Array, length: Uint32Array) => number;
let getsockopt: GetSockOpt | undefined;

function bound(): GetSockOpt {
  getsockopt ??= koffi
    .load('libc.so.6')
    .func('int getsockopt(int fd, int level, int name, _Inout_ uint8_t *value, _Inout_ uint32_t *length)');
  return getsockopt;
}

/** The descriptor under a connected Node socket, or undefined when it has none (yet). */
export function socketDescriptor(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** SO_PEERCRED of a connected unix socket; EBADF without a descriptor, the errno otherwise. */
export function peerCredentials(socket: Socket): PeerCredentials {
  const fd = socketDescriptor(socket);
  if (fd === undefined)
    throw new FssError('EBADF', 'the socket has no descriptor', { syscall: 'getsockopt' });
  const value = new Uint8Array(UCRED_BYTES);
  const length = new Uint32Array([UCRED_BYTES]);
  if (bound()(fd, SOL_SOCKET, SO_PEERCRED, value, length) !== 0) {
    throw errnoError(koffi.errno(), 'getsockopt(SO_PEERCRED)');
  }
  if (length[0] !== UCRED_BYTES) {
    throw new FssError('EPROTO', `SO_PEERCRED returned ${length[0]} bytes`, { syscall: 'getsockopt' });
  }
  const fields = new Uint32Array(value.buffer); // native byte order, as the kernel wrote it
  return { pid: fields[0] as number, uid: fields[1] as number, gid: fields[2] as number };
}

/**
 * Why the peer of `socket` may not use a server run by `serverUid` (this process's effective
 * uid by default), or undefined when it may: the same user, or root. Fails closed: a socket
 * whose credentials cannot be read is refused, with the reason.
 */
export function peerRefusal(socket: Socket, serverUid = process.geteuid?.() ?? 0): string | undefined {
  let peer: PeerCredentials;
  try {
    peer = peerCredentials(socket);
  } catch (error) {
    return `cannot read the peer's credentials: ${(error as Error).message}`;
  }
  if (peer.uid === serverUid || peer.uid === 0) return undefined;
  return `uid ${peer.uid} (pid ${peer.pid}) is neither root nor the daemon's user (uid ${serverUid})`;
}
