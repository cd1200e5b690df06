/**
 * Metadata contexts over the wire, with the raw client: what LIST_META_CONTEXT and
 * SET_META_CONTEXT answer to each kind of query, which selection a connection ends up with,
 * and BLOCK_STATUS replies (a chunk per context, DONE on the last, REQ_ONE, errors) compared
 * byte for byte with a model of each context's extents, for random requests (fast-check).
 */
import { type AllocationRun, type BlockDevice, FssError, MemoryBlockDevice } from '@fss/core';
import { tempDir } from '@fss/test-utils';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NbdExtent, NbdMetaContext } from '../src/meta-context';
import {
  BASE_ALLOCATION,
  ChunkType,
  Command,
  CommandFlag,
  ExtentFlag,
  NbdErrno,
  Option,
  Reply,
  ReplyFlag,
  STRUCTURED_REPLY_MAGIC,
} from '../src/protocol';
import { type RunningServer, startServer } from './helpers';
import { goData, RawClient } from './raw-client';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;

/** Meta-context option data: export name, then the queries. */
export function metaData(name: string, queries: string[]): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from(name), Buffer.alloc(4)];
  parts[0]!.writeUInt32BE(Buffer.byteLength(name), 0);
  parts[2]!.writeUInt32BE(queries.length, 0);
  for (const query of queries) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(Buffer.byteLength(query), 0);
    parts.push(length, Buffer.from(query));
  }
  return Buffer.concat(parts);
}

interface Chunk {
  flags: number;
  type: number;
  cookie: bigint;
  payload: Buffer;
}

async function readChunk(client: RawClient): Promise<Chunk> {
  const header = (await client.raw.read(20))!;
  expect(header.readUInt32BE(0)).toBe(STRUCTURED_REPLY_MAGIC);
  const payload = (await client.raw.read(header.readUInt32BE(16)))!;
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    cookie: header.readBigUInt64BE(8),
    payload,
  };
}

/** Reads a reply's chunks up to the one carrying DONE. */
async function readReplyChunks(client: RawClient): Promise<Chunk[]> {
  const chunks: Chunk[] = [];
  for (;;) {
    const chunk = await readChunk(client);
    chunks.push(chunk);
    if ((chunk.flags & ReplyFlag.DONE) !== 0) return chunks;
  }
}

/** A BLOCK_STATUS chunk's payload: the context id and its extents. */
function decodeStatus(payload: Buffer): { id: number; extents: NbdExtent[] } {
  const extents: NbdExtent[] = [];
  for (let at = 4; at < payload.length; at += 8) {
    extents.push({ length: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
  }
  return { id: payload.readUInt32BE(0), extents };
}

/** The names in META_CONTEXT replies, and their ids. */
function contextsOf(replies: { type: number; data: Buffer }[]): { id: number; name: string }[] {
  return replies
    .filter((reply) => reply.type === Reply.META_CONTEXT)
    .map((reply) => ({ id: reply.data.readUInt32BE(0), name: reply.data.subarray(4).toString() }));
}

/**
 * A context whose answer is a fixed map of the device (runs of flags), returned from the
 * asked offset; its last extent runs past the asked length, as a provider may.
 */
function mappedContext(name: string, map: readonly NbdExtent[]): NbdMetaContext {
  return {
    name,
    extents: async (offset, length, extentsMax) => {
      const out: NbdExtent[] = [];
      let start = 0;
      for (const run of map) {
        const end = start + run.length;
        if (end > offset && out.length < extentsMax) {
          out.push({ length: end - Math.max(start, offset), flags: run.flags });
          if (end >= offset + length) break;
        }
        start = end;
      }
      return out;
    },
  };
}

/** The flags a map gives byte `offset`. */
function flagsAt(map: readonly NbdExtent[], offset: number): number {
  let start = 0;
  for (const run of map) {
    if (offset < start + run.length) return run.flags;
    start += run.length;
  }
  throw new Error(`offset ${offset} outside the map`);
}

/** A random map of the device: runs of 512-byte multiples with flags 0..3. */
function randomMap(seed: number): NbdExtent[] {
  let state = seed;
  const next = (): number => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state;
  };
  const map: NbdExtent[] = [];
  for (let covered = 0; covered < SIZE; ) {
    const length = Math.min(SIZE - covered, 512 * (1 + (next() % 300)));
    map.push({ length, flags: next() % 4 });
    covered += length;
  }
  return map;
}

const dirtyA = randomMap(7);
const dirtyB = randomMap(99);
/** The device's holes: every other 64 KiB. */
const holes = (offset: number): boolean => Math.floor(offset / 65536) % 2 === 1;

/** A memory device that reports every other 64 KiB as a hole (an allocation capability). */
function sparseDevice(): BlockDevice {
  const device = new MemoryBlockDevice(SIZE);
  const allocation = async (offset: number, length: number, runsMax: number): Promise<AllocationRun[]> => {
    const runs: AllocationRun[] = [];
    for (let at = offset; at < offset + length && runs.length < runsMax; ) {
      const end = Math.min(offset + length, (Math.floor(at / 65536) + 1) * 65536);
      runs.push({ length: end - at, hole: holes(at), zero: holes(at) });
      at = end;
    }
    return runs;
  };
  return Object.assign(device, { allocation });
}

let dir: ReturnType<typeof tempDir>;
let running: RunningServer;
let failing = false;

beforeAll(async () => {
  dir = tempDir('fss-nbd-meta-');
  running = await startServer(dir.path, [
    {
      name: 'unit',
      device: sparseDevice(),
      metaContexts: () => [
        mappedContext('qemu:dirty-bitmap:a', dirtyA),
        mappedContext('qemu:dirty-bitmap:b', dirtyB),
        {
          name: 'x-test:failing',
          extents: async () => {
            if (failing) throw new FssError('ENXIO', 'unit gone');
            return [{ length: 512, flags: 0 }];
          },
        },
        { name: 'x-test:broken', extents: async () => [] },
      ],
    },
    { name: 'plain', device: new MemoryBlockDevice(SIZE) },
  ]);
});

afterAll(async () => {
  await running.close();
  dir.remove();
});

/** A client with structured replies negotiated. */
async function structuredClient(): Promise<RawClient> {
  const { client } = await RawClient.handshake(running.socketPath);
  client.sendOption(Option.STRUCTURED_REPLY);
  expect((await client.readOptionReplies()).map((reply) => reply.type)).toEqual([Reply.ACK]);
  return client;
}

async function list(client: RawClient, name: string, queries: string[]) {
  client.sendOption(Option.LIST_META_CONTEXT, metaData(name, queries));
  return client.readOptionReplies();
}

async function select(client: RawClient, name: string, queries: string[]) {
  client.sendOption(Option.SET_META_CONTEXT, metaData(name, queries));
  return client.readOptionReplies();
}

async function go(client: RawClient, name: string): Promise<void> {
  client.sendOption(Option.GO, goData(name, []));
  expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ACK);
}

const ALL = [
  BASE_ALLOCATION,
  'qemu:dirty-bitmap:a',
  'qemu:dirty-bitmap:b',
  'x-test:failing',
  'x-test:broken',
];

describe('LIST_META_CONTEXT', () => {
  it('lists every context for no query, and namespace wildcards and exact names otherwise', async () => {
    const client = await structuredClient();
    const cases: [string[], string[]][] = [
      [[], ALL],
      [['base:'], [BASE_ALLOCATION]],
      [['qemu:'], ['qemu:dirty-bitmap:a', 'qemu:dirty-bitmap:b']],
      [['qemu:dirty-bitmap:'], ['qemu:dirty-bitmap:a', 'qemu:dirty-bitmap:b']],
      [['qemu:dirty-bitmap:b', 'qemu:dirty-bitmap:b'], ['qemu:dirty-bitmap:b']],
      [['qemu:dirty-bitmap:zz', 'unknown-ns:thing', 'base:nothing'], []],
      [
        [BASE_ALLOCATION, 'qemu:dirty-bitmap:a'],
        [BASE_ALLOCATION, 'qemu:dirty-bitmap:a'],
      ],
    ];
    for (const [queries, expected] of cases) {
      const replies = await list(client, 'unit', queries);
      expect(replies.at(-1)!.type, queries.join(',')).toBe(Reply.ACK);
      const contexts = contextsOf(replies);
      expect(
        contexts.map((each) => each.name),
        queries.join(','),
      ).toEqual(expected);
      expect(contexts.every((each) => each.id === 0)).toBe(true);
    }
    // The default export is the first; an export without contexts of its own has base:allocation.
    expect(contextsOf(await list(client, '', ['qemu:'])).length).toBe(2);
    expect(contextsOf(await list(client, 'plain', [])).map((each) => each.name)).toEqual([BASE_ALLOCATION]);
    client.close();
  });

  it('refuses a query without a namespace (ERR_INVALID) and an unknown export (ERR_UNKNOWN)', async () => {
    const client = await structuredClient();
    const invalid = await list(client, 'unit', ['allocation']);
    expect(invalid.map((reply) => reply.type)).toEqual([Reply.ERR_INVALID]);
    expect(invalid[0]!.data.toString()).toContain("query 'allocation' has no namespace");
    expect((await list(client, 'unit', [':leaf'])).at(-1)!.type).toBe(Reply.ERR_INVALID);
    expect((await list(client, 'nope', [])).map((reply) => reply.type)).toEqual([Reply.ERR_UNKNOWN]);
    // Malformed data: a query length past the end.
    const data = metaData('unit', ['base:allocation']);
    data.writeUInt32BE(999, data.length - 'base:allocation'.length - 4);
    client.sendOption(Option.LIST_META_CONTEXT, data);
    expect((await client.readOptionReplies()).map((reply) => reply.type)).toEqual([Reply.ERR_INVALID]);
    client.close();
  });
});

describe('SET_META_CONTEXT', () => {
  it('selects exact names once each with distinct non-zero ids; wildcards select nothing', async () => {
    const client = await structuredClient();
    const wildcard = await select(client, 'unit', ['base:', 'qemu:', 'qemu:dirty-bitmap:']);
    expect(wildcard.map((reply) => reply.type)).toEqual([Reply.ACK]);
    expect((await select(client, 'unit', [])).map((reply) => reply.type)).toEqual([Reply.ACK]);
    const set = contextsOf(
      await select(client, 'unit', ['qemu:dirty-bitmap:b', BASE_ALLOCATION, BASE_ALLOCATION, 'x-y:z']),
    );
    expect(set.map((each) => each.name).sort()).toEqual([BASE_ALLOCATION, 'qemu:dirty-bitmap:b']);
    expect(new Set(set.map((each) => each.id)).size).toBe(2);
    expect(set.every((each) => each.id !== 0)).toBe(true);
    client.close();
  });

  it('needs structured replies first', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    expect((await select(client, 'unit', [BASE_ALLOCATION])).map((reply) => reply.type)).toEqual([
      Reply.ERR_INVALID,
    ]);
    client.close();
  });

  /** Negotiates `steps`, then GO `name`; resolves with BLOCK_STATUS's reply chunks. */
  async function statusAfter(steps: (client: RawClient) => Promise<void>, name: string): Promise<Chunk[]> {
    const client = await structuredClient();
    await steps(client);
    await go(client, name);
    client.sendRequest(Command.BLOCK_STATUS, 0, 65536, { cookie: 3n });
    const chunks = await readReplyChunks(client);
    client.close();
    return chunks;
  }

  const refused = { type: ChunkType.ERROR, flags: ReplyFlag.DONE };

  it('counts only the last SET, only for the export it named, and a failed SET clears it', async () => {
    const selectBase = async (client: RawClient) => {
      await select(client, 'unit', [BASE_ALLOCATION]);
    };
    expect((await statusAfter(selectBase, 'unit'))[0]).toMatchObject({ type: ChunkType.BLOCK_STATUS });
    // The default name is the first export, so a SET for 'unit' holds for GO ''.
    expect((await statusAfter(selectBase, ''))[0]).toMatchObject({ type: ChunkType.BLOCK_STATUS });
    const other = await statusAfter(selectBase, 'plain');
    expect(other).toHaveLength(1);
    expect(other[0]).toMatchObject(refused);
    expect(other[0]!.payload.readUInt32BE(0)).toBe(NbdErrno.EINVAL);
    const thenFailed = await statusAfter(async (client) => {
      await selectBase(client);
      expect((await select(client, 'nope', [BASE_ALLOCATION])).at(-1)!.type).toBe(Reply.ERR_UNKNOWN);
    }, 'unit');
    expect(thenFailed[0]).toMatchObject(refused);
    const thenEmpty = await statusAfter(async (client) => {
      await selectBase(client);
      await select(client, 'unit', ['qemu:']);
    }, 'unit');
    expect(thenEmpty[0]).toMatchObject(refused);
  });
});

describe('BLOCK_STATUS', () => {
  /** A client that selected `queries` on 'unit' and entered transmission; ids by name. */
  async function transmitting(queries: string[]): Promise<{ client: RawClient; ids: Map<number, string> }> {
    const client = await structuredClient();
    const ids = new Map(
      contextsOf(await select(client, 'unit', queries)).map((each) => [each.id, each.name]),
    );
    await go(client, 'unit');
    return { client, ids };
  }

  const models: Record<string, (offset: number) => number> = {
    [BASE_ALLOCATION]: (offset) => (holes(offset) ? ExtentFlag.HOLE | ExtentFlag.ZERO : 0),
    'qemu:dirty-bitmap:a': (offset) => flagsAt(dirtyA, offset),
    'qemu:dirty-bitmap:b': (offset) => flagsAt(dirtyB, offset),
  };

  it('answers a chunk per context, DONE on the last, each equal to its model (property)', async () => {
    const { client, ids } = await transmitting([
      BASE_ALLOCATION,
      'qemu:dirty-bitmap:a',
      'qemu:dirty-bitmap:b',
    ]);
    expect(ids.size).toBe(3);
    let cookie = 100n;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: SIZE / 512 - 1 }),
          fc.integer({ min: 1, max: SIZE / 512 }),
          fc.boolean(),
          async (startSector, sectors, reqOne) => {
            const offset = startSector * 512;
            const length = Math.min(sectors * 512, SIZE - offset);
            cookie += 1n;
            client.sendRequest(Command.BLOCK_STATUS, offset, length, {
              cookie,
              flags: reqOne ? CommandFlag.REQ_ONE : 0,
            });
            const chunks = await readReplyChunks(client);
            expect(chunks).toHaveLength(3);
            const seen = new Set<number>();
            chunks.forEach((chunk, index) => {
              expect(chunk.type).toBe(ChunkType.BLOCK_STATUS);
              expect(chunk.cookie).toBe(cookie);
              expect(chunk.flags).toBe(index === chunks.length - 1 ? ReplyFlag.DONE : 0);
              const { id, extents } = decodeStatus(chunk.payload);
              const model = models[ids.get(id)!]!;
              seen.add(id);
              if (reqOne) expect(extents).toHaveLength(1);
              let at = offset;
              for (const [index, extent] of extents.entries()) {
                expect(extent.length).toBeGreaterThan(0);
                if (index > 0) expect(extent.flags).not.toBe(extents[index - 1]!.flags); // merged
                // Every 512-byte sector of the extent has the extent's flags in the model.
                for (let sector = at; sector < at + extent.length; sector += 512) {
                  expect(model(sector), `${ids.get(id)} at ${sector}`).toBe(extent.flags);
                }
                at += extent.length;
              }
              expect(at).toBeGreaterThan(offset);
              expect(at).toBeLessThanOrEqual(offset + length);
              // Without REQ_ONE the answer stops early only when the next extent differs.
              if (!reqOne && at < offset + length) expect(model(at)).not.toBe(extents.at(-1)!.flags);
            });
            expect(seen.size).toBe(3);
          },
        ),
        { numRuns: Number(process.env['FSS_PROPERTY_RUNS'] ?? 200) },
      );
    } finally {
      client.close();
    }
  });

  it('fails the whole request with one ERROR chunk when a context fails, and EIO for a broken one', async () => {
    const { client } = await transmitting([BASE_ALLOCATION, 'x-test:failing']);
    client.sendRequest(Command.BLOCK_STATUS, 0, 4096, { cookie: 1n });
    expect((await readReplyChunks(client)).map((chunk) => chunk.type)).toEqual([
      ChunkType.BLOCK_STATUS,
      ChunkType.BLOCK_STATUS,
    ]);
    failing = true;
    try {
      client.sendRequest(Command.BLOCK_STATUS, 0, 4096, { cookie: 2n });
      const chunks = await readReplyChunks(client);
      expect(chunks).toHaveLength(1);
      expect(chunks[0]).toMatchObject({ type: ChunkType.ERROR, flags: ReplyFlag.DONE, cookie: 2n });
      expect(chunks[0]!.payload.readUInt32BE(0)).toBe(NbdErrno.EIO);
    } finally {
      failing = false;
    }
    client.close();
    const broken = await transmitting(['x-test:broken']);
    broken.client.sendRequest(Command.BLOCK_STATUS, 0, 4096, { cookie: 4n });
    const chunks = await readReplyChunks(broken.client);
    expect(chunks[0]).toMatchObject({ type: ChunkType.ERROR, cookie: 4n });
    expect(chunks[0]!.payload.readUInt32BE(0)).toBe(NbdErrno.EIO);
    // The connection stays usable.
    broken.client.sendRequest(Command.READ, 0, 512, { cookie: 5n });
    expect((await readChunk(broken.client)).type).toBe(ChunkType.OFFSET_DATA);
    broken.client.close();
  });

  it('refuses an empty request, one past the end and unknown flags with EINVAL', async () => {
    const { client } = await transmitting([BASE_ALLOCATION]);
    const cases: [number, number, number][] = [
      [0, 0, 0],
      [SIZE - 512, 1024, 0],
      [0, 512, CommandFlag.FUA],
    ];
    for (const [offset, length, flags] of cases) {
      client.sendRequest(Command.BLOCK_STATUS, offset, length, { flags });
      const chunks = await readReplyChunks(client);
      expect(chunks[0]!.type).toBe(ChunkType.ERROR);
      expect(chunks[0]!.payload.readUInt32BE(0)).toBe(NbdErrno.EINVAL);
    }
    client.close();
  });
});
