/**
 * SO_PEERCRED through koffi: a connection from this very process reports our pid, uid and
 * gid; the refusal rule serves the daemon's own user and root only, and fails closed on a
 * socket without a descriptor. (A real other user is refused in packages/fssd/test/security.test.ts.)
 */
import { createConnection, createServer, type Server, Socket } from 'node:net';
import { join } from 'node:path';
import { tempDir } from '@fss/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import { peerCredentials, peerRefusal, socketDescriptor } from '../src/peer-credentials';

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const step of cleanup.reverse()) step();
  cleanup = [];
});

/** A unix server and one connection to it from this process; resolves with the accepted socket. */
async function acceptedFromSelf(): Promise<Socket> {
  const dir = tempDir('fss-peercred-');
  const path = join(dir.path, 's.sock');
  let server: Server | undefined;
  const accepted = new Promise<Socket>((resolve) => {
    server = createServer((socket) => resolve(socket));
  });
  await new Promise<void>((resolve) => server!.listen(path, resolve));
  const client = createConnection({ path });
  const socket = await accepted;
  cleanup.push(() => {
    client.destroy();
    socket.destroy();
    server!.close();
    dir.remove();
  });
  return socket;
}

describe('peer credentials', () => {
  it('a connection from this process carries our pid, uid and gid', async () => {
    const socket = await acceptedFromSelf();
    expect(socketDescriptor(socket)).toBeGreaterThan(2);
    expect(peerCredentials(socket)).toEqual({
      pid: process.pid,
      uid: process.getuid?.(),
      gid: process.getgid?.(),
    });
  });

  it('serves the same user and root; another user is refused with both uids named', async () => {
    const socket = await acceptedFromSelf();
    const uid = process.getuid?.() as number;
    expect(peerRefusal(socket, uid)).toBeUndefined();
    const other =
      uid === 0
        ? undefined
        : `uid ${uid} (pid ${process.pid}) is neither root nor the daemon's user (uid 4242)`;
    // Root is always served (a root client may use any user's daemon).
    expect(peerRefusal(socket, 4242)).toBe(other);
  });

  it('fails closed on a socket without a descriptor', () => {
    const unconnected = new Socket();
    expect(socketDescriptor(unconnected)).toBeUndefined();
    expect(() => peerCredentials(unconnected)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(peerRefusal(unconnected, 0)).toMatch(/^cannot read the peer's credentials: EBADF/);
  });
});
