/**
 * Bad input from programs rather than people (issue 11 item 5), against the real daemon:
 *
 * - Control socket: lines that are not JSON, requests with mistyped or NUL-carrying fields
 *   (the NUL cases argv cannot carry), and one 10 MiB request. Each is answered EINVAL (the
 *   10 MiB one, once, then the connection is closed), the daemon stays up and answers the next
 *   client, and nothing is created, truncated or claimed: the sandbox's file tree is unchanged
 *   (each bad FSSIOCSET names a backup inside it), no origin is held, no unit is active.
 * - NBD peers, on the origin export and a snapshot's: a seeded, bounded fuzz (noise, noise
 *   after the handshake, requests with random commands, flags, offsets and lengths, some
 *   oversized or past the end, WRITE payloads cut short, then a close, a half-close or a
 *   reset); the seed is printed, FSS_FUZZ_SEED=<n> replays it, FSS_FUZZ_SESSIONS=<n> runs
 *   longer. Afterwards the snapshot still reads back as the origin was at snapshot time, the
 *   unit is valid, every fuzz connection is gone and the daemon serves a clean client. Then
 *   the specific cases: a WRITE cut off mid-payload by a disconnect is not applied; misaligned
 *   writes land exactly (and the snapshot keeps the old bytes); a READ over the maximum
 *   payload closes that connection only.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join, relative } from 'node:path';
import { FssClient } from '@fss/control';
import { SeededRandom } from '@fss/core';
import { isAlive, NbdClient, pattern, Sandbox } from '@fss/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const IMAGE_BYTES = 8 * MiB;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_EXPORT_NAME = 1;
const REQUEST_MAGIC = 0x25609513;
/** @fss/nbd's Limits.PAYLOAD_BYTES_MAX: a READ or WRITE longer than this closes the connection. */
const PAYLOAD_BYTES_MAX = 32 * MiB;

let sandbox: Sandbox;

/** Every path under the sandbox (but the growing log) with type, mode, size and content hash. */
function tree(): Record<string, string> {
  const entries: Record<string, string> = {};
  const visit = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const key = relative(sandbox.dir, path);
      if (key === 'run/fssd.log') continue;
      const info = lstatSync(path);
      let description = `${info.isDirectory() ? 'dir' : info.isFile() ? 'file' : 'other'} ${info.mode.toString(8)} ${info.size}`;
      if (info.isFile()) description += ` ${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
      entries[key] = description;
      if (info.isDirectory()) visit(path);
    }
  };
  visit(sandbox.dir);
  return entries;
}

/** Sends raw bytes on the control socket; collects answer lines until it closes or goes quiet. */
function exchange(payload: string | Buffer, quietMs = 500): Promise<{ lines: string[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path: join(sandbox.runDir, 'fssd.sock') });
    let text = '';
    let timer: NodeJS.Timeout | undefined;
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ lines: text.split('\n').filter((line) => line !== ''), closed });
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(false), quietMs);
    };
    socket.on('connect', () => {
      socket.write(payload);
      arm();
    });
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      text += chunk;
      arm();
    });
    socket.on('close', () => finish(true));
    socket.on('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EPIPE' || error.code === 'ECONNRESET' ? undefined : reject(error),
    );
  });
}

async function daemonState(): Promise<{ origins: string[]; active: string[]; valid: boolean[] }> {
  const client = await FssClient.connect({ runDir: sandbox.runDir, autostart: false });
  try {
    const status = await client.status();
    const active = status.units.filter((unit) => unit.state !== 'idle');
    return {
      origins: status.origins.map((origin) => origin.name),
      active: active.map((unit) => unit.unit),
      valid: active.map((unit) => unit.valid === true),
    };
  } finally {
    client.close();
  }
}

describe('control socket: not JSON, mistyped, NUL, 10 MiB', () => {
  beforeAll(async () => {
    sandbox = await Sandbox.create();
    writeFileSync(sandbox.path('image'), pattern(IMAGE_BYTES, 1));
    expect((await sandbox.run('fssconfig', ['-l', 'fss0'])).status).toBe(0); // the daemon is up
  });
  afterAll(async () => {
    await sandbox.cleanup();
  });

  const set = (fields: Record<string, unknown>, arg: Record<string, unknown> = {}): string =>
    JSON.stringify({
      op: 'FSSIOCSET',
      unit: 'fss1',
      mode: 'rw',
      ...fields,
      arg: { fss_mount: '$DIR/image', fss_bstore: '$DIR/b', fss_csize: 0, fss_flags: 0, ...arg },
    });
  const cases: [string, string][] = [
    ['not JSON', 'not json'],
    ['truncated JSON', '{"op":"FSSIOCSET","unit":"fss1"'],
    ['JSON that is not an object', '"FSSIOCSET"'],
    ['an empty line', ''],
    ['binary', '\u0001\u0002\u00fe\u00ff'],
    ['unknown op', '{"op":"FSSIOCNOPE","unit":"fss1"}'],
    ['cluster size a string', set({}, { fss_csize: '64k' })],
    ['cluster size negative', set({}, { fss_csize: -1 })],
    ['cluster size fractional', set({}, { fss_csize: 1.5 })],
    ['flags not a number', set({}, { fss_flags: 'x' })],
    ['mount not a string', set({}, { fss_mount: 42 })],
    ['backup relative', set({}, { fss_bstore: 'b' })],
    ['backup_size negative', set({ backup_size: -1 })],
    ['backup_size a string', set({ backup_size: '1m' })],
    ['an unknown field', set({ extra: true })],
    ['arg missing', JSON.stringify({ op: 'FSSIOCSET', unit: 'fss1', mode: 'rw' })],
    ['mode wrong', set({ mode: 'rwx' })],
    ['request number wrong', set({ request: 1 })],
    ['unit name with NUL', set({ unit: 'fss1\u0000' })],
    ['unit name with ..', set({ unit: '../fss1' })],
    ['unit fss999', set({ unit: 'fss999' })],
    ['mount path with NUL', set({}, { fss_mount: '$DIR/image\u0000x' })],
    ['backup path with NUL', set({}, { fss_bstore: '$DIR/b\u0000x' })],
    ['origin-add path with NUL', JSON.stringify({ op: 'origin-add', path: '$DIR/image\u0000x' })],
    ['origin-add name with NUL', JSON.stringify({ op: 'origin-add', path: '$DIR/image', name: 'a\u0000b' })],
    ['origin-add name with /', JSON.stringify({ op: 'origin-add', path: '$DIR/image', name: 'a/b' })],
    ['origin-add path an object', '{"op":"origin-add","path":{}}'],
  ];

  for (const [what, line] of cases) {
    it(`${what}: an error answer, nothing created, truncated or claimed`, async () => {
      const before = tree();
      const request = line.replaceAll('$DIR', sandbox.dir);
      const { lines, closed } = await exchange(`${request}\n{"id":"next","op":"ping"}\n`);
      expect(closed).toBe(false); // the connection stays usable
      expect(lines).toHaveLength(2);
      const answer = JSON.parse(lines[0] as string) as {
        ok: boolean;
        error: { code: string; errno: number };
      };
      // fss999 is ENXIO as NetBSD's open of a missing unit; every other case is EINVAL.
      const code = what === 'unit fss999' ? 'ENXIO' : 'EINVAL';
      expect(answer).toMatchObject({ ok: false, error: { code } });
      expect(JSON.parse(lines[1] as string)).toMatchObject({ id: 'next', ok: true });
      expect(tree()).toEqual(before);
      expect(await daemonState()).toEqual({ origins: [], active: [], valid: [] });
    });
  }

  it('a 10 MiB request: EINVAL once, the connection closed, nothing created, the daemon serves on', async () => {
    const before = tree();
    const pid = sandbox.daemonPid() as number;
    const huge = set({ pad: 'x'.repeat(10 * MiB) }).replaceAll('$DIR', sandbox.dir);
    expect(huge.length).toBeGreaterThan(10 * MiB);
    const { lines, closed } = await exchange(`${huge}\n{"op":"ping"}\n`);
    expect(closed).toBe(true);
    expect(lines.map((line) => JSON.parse(line))).toEqual([
      {
        id: null,
        ok: false,
        error: expect.objectContaining({
          code: 'EINVAL',
          errno: 22,
          detail: 'request longer than 65536 bytes',
        }),
      },
    ]);
    expect(isAlive(pid)).toBe(true);
    expect(tree()).toEqual(before);
    expect(await daemonState()).toEqual({ origins: [], active: [], valid: [] });
    const after = await exchange('{"id":7,"op":"ping"}\n');
    expect(JSON.parse(after.lines[0] as string)).toMatchObject({ id: 7, ok: true, result: { pid } });
  });
});

/** A raw NBD client socket: greeting read, then (when asked) EXPORT_NAME of the default export. */
async function rawSession(path: string, handshake: boolean): Promise<Socket> {
  const socket = createConnection({ path });
  socket.on('error', () => socket.destroy());
  let received = Buffer.alloc(0);
  const want = async (bytes: number): Promise<boolean> => {
    while (received.length < bytes) {
      const more = await new Promise<Buffer | undefined>((resolve) => {
        socket.once('data', resolve);
        socket.once('close', () => resolve(undefined));
      });
      if (more === undefined) return false;
      received = Buffer.concat([received, more]);
    }
    return true;
  };
  await new Promise((resolve) => socket.once('connect', resolve));
  if (!(await want(18)) || !handshake) return socket;
  const option = Buffer.alloc(20);
  option.writeUInt32BE(3, 0); // FIXED_NEWSTYLE | NO_ZEROES
  option.writeBigUInt64BE(IHAVEOPT, 4);
  option.writeUInt32BE(OPT_EXPORT_NAME, 12);
  option.writeUInt32BE(0, 16);
  socket.write(option);
  await want(18 + 10);
  socket.on('data', () => undefined); // replies are read and dropped
  return socket;
}

function noise(random: SeededRandom, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let index = 0; index < length; index++) out[index] = random.integer(0, 255);
  return out;
}

/** One request with fields drawn to hit every branch of the server's checks. */
function fuzzRequest(random: SeededRandom): Buffer {
  const head = Buffer.alloc(28);
  head.writeUInt32BE(random.next() < 0.95 ? REQUEST_MAGIC : random.integer(0, 0xffffffff), 0);
  head.writeUInt16BE(random.next() < 0.7 ? 0 : random.integer(0, 0xffff), 4);
  const type = random.next() < 0.9 ? random.integer(0, 7) : random.integer(0, 0xffff);
  head.writeUInt16BE(type, 6);
  head.writeBigUInt64BE(BigInt(random.integer(0, 0xffffffff)), 8);
  const offset =
    random.next() < 0.8 ? random.integer(0, IMAGE_BYTES) : random.integer(0, 0xffffffff) * 2 ** 21;
  head.writeBigUInt64BE(BigInt(offset), 16);
  const length =
    random.next() < 0.85 ? random.integer(0, 65536) : random.integer(PAYLOAD_BYTES_MAX - 1, 0xffffffff);
  head.writeUInt32BE(length, 24);
  if (type !== 1 || length > 65536) return head; // WRITE carries its payload, perhaps cut short
  return Buffer.concat([head, noise(random, random.next() < 0.8 ? length : random.integer(0, length))]);
}

async function fuzzSession(random: SeededRandom, path: string): Promise<void> {
  const shape = random.integer(0, 2);
  const socket = await rawSession(path, shape !== 0);
  if (shape === 0 || shape === 1) socket.write(noise(random, random.integer(0, 3000)));
  else for (let count = random.integer(1, 12); count > 0; count--) socket.write(fuzzRequest(random));
  const ending = random.integer(0, 2);
  if (ending === 0) socket.destroy();
  else if (ending === 1) socket.end();
  else await new Promise((resolve) => setTimeout(resolve, random.integer(0, 20)));
  socket.destroy();
}

describe('NBD peers: garbage, oversized, misaligned, cut short', () => {
  let snapshotModel: Buffer;
  let originSocket: string;
  let unitSocket: string;
  beforeAll(async () => {
    sandbox = await Sandbox.create();
    snapshotModel = Buffer.from(pattern(IMAGE_BYTES, 2));
    writeFileSync(sandbox.path('image'), snapshotModel);
    expect((await sandbox.run('fssconfig', ['fss0', 'image', 'backup', '4k'])).status).toBe(0);
    originSocket = join(sandbox.runDir, 'origin', 'image.sock');
    unitSocket = join(sandbox.runDir, 'fss0.sock');
  });
  afterAll(async () => {
    await sandbox.cleanup();
  });

  async function clientsGone(): Promise<boolean> {
    for (let tries = 0; tries < 100; tries++) {
      const client = await FssClient.connect({ runDir: sandbox.runDir, autostart: false });
      const status = await client.status();
      client.close();
      const clients = status.units[0]?.exportClients ?? -1;
      const originClients = status.origins[0]?.exportClients ?? -1;
      if (clients === 0 && originClients === 0) return true;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return false;
  }

  it('seeded fuzz on both exports: the snapshot still equals the origin at snapshot time', {
    timeout: 240_000,
  }, async () => {
    const seed = Number(process.env['FSS_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    const sessions = Number(process.env['FSS_FUZZ_SESSIONS'] ?? 120);
    console.log(`fssd NBD fuzz: seed ${seed}, ${sessions} sessions (replay: FSS_FUZZ_SEED=${seed})`);
    const random = new SeededRandom(seed);
    const pid = sandbox.daemonPid() as number;
    for (let index = 0; index < sessions; index++) {
      await fuzzSession(random, random.next() < 0.6 ? originSocket : unitSocket);
    }
    expect(isAlive(pid), `seed ${seed}`).toBe(true);
    expect(await clientsGone(), `seed ${seed}`).toBe(true);
    expect(await daemonState(), `seed ${seed}`).toEqual({
      origins: ['image'],
      active: ['fss0'],
      valid: [true],
    });
    const snapshot = await NbdClient.connect(unitSocket);
    try {
      for (let at = 0; at < IMAGE_BYTES; at += MiB) {
        const read = await snapshot.read(at, MiB);
        expect(read.equals(snapshotModel.subarray(at, at + MiB)), `seed ${seed}, snapshot at ${at}`).toBe(
          true,
        );
      }
    } finally {
      snapshot.destroy();
    }
  });

  it('a WRITE cut off mid-payload by a disconnect is not applied', async () => {
    const origin = await NbdClient.connect(originSocket);
    const at = 5 * MiB + 4096;
    const before = await origin.read(at, 65536);
    const socket = await rawSession(originSocket, true);
    const head = Buffer.alloc(28);
    head.writeUInt32BE(REQUEST_MAGIC, 0);
    head.writeUInt16BE(1, 6); // WRITE
    head.writeBigUInt64BE(BigInt(at), 16);
    head.writeUInt32BE(65536, 24);
    socket.write(Buffer.concat([head, Buffer.alloc(40_000, 0xee)]));
    await new Promise((resolve) => setTimeout(resolve, 100));
    socket.destroy();
    expect((await origin.read(at, 65536)).equals(before)).toBe(true);
    origin.destroy();
    expect(await clientsGone()).toBe(true);
  });

  it('misaligned writes land byte-exact on the origin; the snapshot keeps the old bytes', async () => {
    const origin = await NbdClient.connect(originSocket);
    const snapshot = await NbdClient.connect(unitSocket);
    try {
      const originModel = Buffer.from(await origin.read(0, IMAGE_BYTES / 2));
      for (const [at, length] of [
        [1, 1],
        [511, 2],
        [4095, 4099],
        [12_345, 70_001],
      ] as const) {
        const data = pattern(length, at);
        await origin.write(at, data);
        Buffer.from(data).copy(originModel, at);
      }
      expect((await origin.read(0, IMAGE_BYTES / 2)).equals(originModel)).toBe(true);
      expect(
        (await snapshot.read(0, IMAGE_BYTES / 2)).equals(snapshotModel.subarray(0, IMAGE_BYTES / 2)),
      ).toBe(true);
    } finally {
      origin.destroy();
      snapshot.destroy();
    }
  });

  it('a READ over the maximum payload closes that connection only', async () => {
    const bystander = await NbdClient.connect(unitSocket);
    const greedy = await NbdClient.connect(unitSocket);
    await expect(greedy.read(0, PAYLOAD_BYTES_MAX + 1)).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(greedy.closed).toBe(true);
    expect((await bystander.read(0, 4096)).equals(snapshotModel.subarray(0, 4096))).toBe(true);
    bystander.destroy();
  });
});
