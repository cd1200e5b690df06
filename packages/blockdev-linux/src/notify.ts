/**
 * sd_notify(3) without libsystemd: one datagram to the AF_UNIX socket $NOTIFY_SOCKET names,
 * which is how a Type=notify service tells systemd it is ready (READY=1), what it is doing
 * (STATUS=…) and that it is stopping (STOPPING=1). Node has no datagram sockets on AF_UNIX,
 * so socket(2), sendto(2) and close(2) are bound through koffi, like the rest of this package.
 *
 * NOTIFY_SOCKET is a path, or an abstract socket when it starts with `@` (the name then
 * starts with a NUL byte and has no terminating one). Unset: nothing is sent (not under
 * systemd), and `sdNotify` says so by returning false.
 *
 * `openDatagramReceiver` is the other end, for tests and for supervisors written in Node: a
 * bound datagram socket read without blocking.
 */
import koffi from 'koffi';
import { errnoError } from './errors';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const EAGAIN = 11;
/** struct sockaddr_un: sa_family_t sun_family; char sun_path[108]. */
const SUN_PATH_BYTES = 108;

interface Sockets {
  socket(domain: number, type: number, protocol: number): number;
  sendto(
    fd: number,
    buffer: Uint8Array,
    length: number,
    flags: number,
    address: Uint8Array,
    addressLength: number,
  ): number;
  bind(fd: number, address: Uint8Array, addressLength: number): number;
  recv(fd: number, buffer: Uint8Array, length: number, flags: number): number;
  close(fd: number): number;
}

let bound: Sockets | undefined;

function sockets(): Sockets {
  if (bound !== undefined) return bound;
  const lib = koffi.load('libc.so.6');
  bound = {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    sendto: lib.func(
      'intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)',
    ),
    bind: lib.func('int bind(int fd, const void *addr, uint32_t addrlen)'),
    recv: lib.func('intptr_t recv(int fd, _Out_ void *buf, size_t len, int flags)'),
    close: lib.func('int close(int fd)'),
  };
  return bound;
}

/** The sockaddr_un for `name` (a path, or `@abstract`) and its length. */
export function unixAddress(name: string): { address: Uint8Array; length: number } {
  const abstract = name.startsWith('@');
  const path = Buffer.from(abstract ? name.slice(1) : name);
  const pathBytes = path.length + 1; // the leading NUL of an abstract name, or the trailing one of a path
  if (name.length <= (abstract ? 1 : 0) || pathBytes > SUN_PATH_BYTES) {
    throw errnoError(36, 'sockaddr_un', name, `socket name must be 1..${SUN_PATH_BYTES - 1} bytes`); // ENAMETOOLONG
  }
  const address = new Uint8Array(2 + SUN_PATH_BYTES);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(path, abstract ? 3 : 2);
  return { address, length: abstract ? 2 + pathBytes : 2 + pathBytes };
}

/**
 * Sends `state` (newline-separated VAR=VALUE assignments) to $NOTIFY_SOCKET. False when it is
 * unset; throws (errno-shaped) when the socket cannot be reached.
 */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const target = env['NOTIFY_SOCKET'];
  if (target === undefined || target === '') return false;
  const { address, length } = unixAddress(target);
  const api = sockets();
  const fd = api.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw errnoError(koffi.errno(), 'socket', target);
  try {
    const message = Buffer.from(state);
    const sent = api.sendto(fd, message, message.length, MSG_NOSIGNAL, address, length);
    if (sent < 0) throw errnoError(koffi.errno(), 'sendto', target);
    return true;
  } finally {
    api.close(fd);
  }
}

export interface DatagramReceiver {
  /** The next datagram as text, or undefined when none is waiting. */
  receive(): string | undefined;
  close(): void;
}

/** A non-blocking datagram socket bound at `name` (a path, or `@abstract`). */
export function openDatagramReceiver(name: string): DatagramReceiver {
  const { address, length } = unixAddress(name);
  const api = sockets();
  const fd = api.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw errnoError(koffi.errno(), 'socket', name);
  if (api.bind(fd, address, length) < 0) {
    const errno = koffi.errno();
    api.close(fd);
    throw errnoError(errno, 'bind', name);
  }
  const buffer = new Uint8Array(4096);
  let open = true;
  return {
    receive: () => {
      if (!open) return undefined;
      const got = api.recv(fd, buffer, buffer.length, 0);
      if (got < 0) {
        const errno = koffi.errno();
        if (errno === EAGAIN) return undefined;
        throw errnoError(errno, 'recv', name);
      }
      return Buffer.from(buffer.subarray(0, got)).toString('utf8');
    },
    close: () => {
      if (open) api.close(fd);
      open = false;
    },
  };
}
