/**
 * Protocol fuzz: random, truncated and malformed bytes into the socket, from many short-lived
 * connections, while a bystander connection keeps doing verified I/O.
 *
 * Goal: no input closes anything but its own connection. Method: a seeded generator (the
 * seed is printed; FSS_FUZZ_SEED=<n> replays it, FSS_FUZZ_SESSIONS=<n> runs longer) builds each
 * session from one of several shapes: pure noise, a handshake cut short, an option with a
 * random number and data, a valid GO followed by noise, or a valid GO followed by requests
 * with mutated fields, bit flips and truncated payloads; sessions that negotiate structured
 * replies also send random LIST/SET_META_CONTEXT queries, and the export's extra contexts
 * answer BLOCK_STATUS with random (also invalid) extents or errors. The client then either closes at
 * once, half-closes, or waits a little. After every few sessions the bystander writes and
 * reads back a block; at the end every fuzz connection must be gone and the server must still
 * accept a real client.
 */
import { FssError, MemoryBlockDevice, SeededRandom } from '@fss/core';
import { tempDir } from '@fss/test-utils';
import { describe, expect, it } from 'vitest';
import type { NbdMetaContext } from '../src/meta-context';
import { Command, CommandFlag, IHAVEOPT, Option, REQUEST_MAGIC } from '../src/protocol';
import { startServer } from './helpers';
import { goData, RawClient, RawSocket } from './raw-client';

const MiB = 1024 * 1024;

function bytes(random: SeededRandom, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let index = 0; index < length; index++) out[index] = random.integer(0, 255);
  return out;
}

function greetingReply(random: SeededRandom): Buffer {
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(random.next() < 0.8 ? 3 : random.integer(0, 0xffffffff), 0);
  return flags;
}

function option(random: SeededRandom, number: number, data: Buffer): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(IHAVEOPT, 0);
  header.writeUInt32BE(number, 8);
  header.writeUInt32BE(random.next() < 0.9 ? data.length : random.integer(0, 20000), 12);
  return Buffer.concat([header, data]);
}

function request(random: SeededRandom): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(random.next() < 0.9 ? REQUEST_MAGIC : random.integer(0, 0xffffffff), 0);
  const type = random.next() < 0.8 ? random.integer(0, 7) : random.integer(0, 0xffff);
  const flags = type === Command.BLOCK_STATUS && random.next() < 0.5 ? CommandFlag.REQ_ONE : 0;
  header.writeUInt16BE(random.next() < 0.7 ? flags : random.integer(0, 0xffff), 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(BigInt(random.integer(0, 0xffffffff)), 8);
  const offset = random.next() < 0.8 ? random.integer(0, 8 * MiB) : random.integer(0, 0xffffffff) * 2 ** 20;
  header.writeBigUInt64BE(BigInt(offset), 16);
  const length = random.next() < 0.8 ? random.integer(0, 65536) : random.integer(0, 0xffffffff);
  header.writeUInt32BE(length, 24);
  let payload: Buffer = Buffer.alloc(0);
  if (type === Command.WRITE && length <= 65536)
    payload = bytes(random, random.next() < 0.8 ? length : random.integer(0, length));
  const message = Buffer.concat([header, payload]);
  if (random.next() < 0.1) {
    const bit = random.integer(0, message.length * 8 - 1);
    message[bit >> 3]! ^= 1 << (bit & 7);
  }
  return message;
}

/** Queries a fuzzed LIST/SET_META_CONTEXT picks from: real names, wildcards and nonsense. */
const QUERIES = [
  'base:allocation',
  'base:',
  'qemu:',
  'qemu:dirty-bitmap:',
  'qemu:dirty-bitmap:fss0',
  'qemu:dirty-bitmap:nope',
  'nocolon',
  ':',
  '',
  'x-a:b',
];

/** LIST/SET_META_CONTEXT data: an export name (mostly real), then 0-4 queries. */
function metaQuery(random: SeededRandom): Buffer {
  const name = Buffer.from(['', 'origin', 'fss0', 'none'][random.integer(0, 3)]!);
  const queries = Array.from({ length: random.integer(0, 4) }, () => {
    const query = QUERIES[random.integer(0, QUERIES.length - 1)]!;
    return Buffer.from(random.next() < 0.9 ? query : bytes(random, random.integer(0, 20)));
  });
  const parts = [Buffer.alloc(4), name, Buffer.alloc(4)];
  parts[0]!.writeUInt32BE(name.length, 0);
  parts[2]!.writeUInt32BE(random.next() < 0.9 ? queries.length : random.integer(0, 0xffffffff), 0);
  for (const query of queries) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(query.length, 0);
    parts.push(length, query);
  }
  return Buffer.concat(parts);
}

/**
 * A dirty-bitmap-like context over `size` bytes whose answers are random: any number of
 * extents, sometimes too long, empty or none at all, sometimes a rejection. The server must
 * turn each into a well-formed reply or an error, never a closed connection.
 */
function chaoticContext(random: SeededRandom, name: string): NbdMetaContext {
  return {
    name,
    extents: async (_offset, length, extentsMax) => {
      const roll = random.next();
      if (roll < 0.05) throw new FssError('ENXIO', 'gone');
      if (roll < 0.1) return [];
      return Array.from({ length: random.integer(1, Math.min(extentsMax, 50)) }, () => ({
        length: random.next() < 0.05 ? 0 : random.integer(1, length * 2),
        flags: random.integer(0, 3),
      }));
    },
  };
}

/** One fuzz session's bytes, after the server's greeting. */
function session(random: SeededRandom): Buffer {
  const shape = random.integer(0, 4);
  const parts: Buffer[] = [];
  if (shape === 0) return bytes(random, random.integer(0, 2000));
  parts.push(greetingReply(random));
  if (shape === 1) {
    const whole = option(random, Option.GO, goData('', [3]));
    parts.push(whole.subarray(0, random.integer(0, whole.length - 1)));
  } else if (shape === 2) {
    for (let count = random.integer(1, 5); count > 0; count--) {
      parts.push(option(random, random.integer(0, 12), bytes(random, random.integer(0, 64))));
    }
  } else {
    if (random.next() < 0.5) {
      // Structured replies and metadata contexts, so BLOCK_STATUS and chunks get fuzzed.
      parts.push(option(random, Option.STRUCTURED_REPLY, Buffer.alloc(0)));
      for (let count = random.integer(0, 3); count > 0; count--) {
        const which = random.next() < 0.7 ? Option.SET_META_CONTEXT : Option.LIST_META_CONTEXT;
        parts.push(option(random, which, metaQuery(random)));
      }
    }
    parts.push(option(random, Option.GO, goData(random.next() < 0.9 ? '' : 'fss0', [3])));
    if (shape === 3) parts.push(bytes(random, random.integer(0, 4000)));
    else for (let count = random.integer(1, 20); count > 0; count--) parts.push(request(random));
  }
  const all = Buffer.concat(parts);
  return random.next() < 0.3 ? all.subarray(0, random.integer(0, all.length)) : all;
}

describe('protocol fuzz', () => {
  it('random, truncated and malformed input closes only its own connection', async () => {
    const seed = Number(process.env['FSS_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    const sessions = Number(process.env['FSS_FUZZ_SESSIONS'] ?? 300);
    console.log(`nbd protocol fuzz: seed ${seed}, ${sessions} sessions (replay: FSS_FUZZ_SEED=${seed})`);
    const random = new SeededRandom(seed);
    const dir = tempDir('fss-nbd-fuzz-');
    const device = new MemoryBlockDevice(8 * MiB);
    const snapshot = new MemoryBlockDevice(8 * MiB, { readOnly: true });
    const running = await startServer(dir.path, [
      {
        name: 'origin',
        device,
        metaContexts: () => [
          chaoticContext(random, 'qemu:dirty-bitmap:fss0'),
          chaoticContext(random, 'x-a:b'),
        ],
      },
      { name: 'fss0', device: snapshot },
    ]);
    const bystander = (await RawClient.go(running.socketPath)).client;
    try {
      for (let index = 0; index < sessions; index++) {
        const raw = await RawSocket.open(running.socketPath);
        await raw.read(18);
        raw.write(session(random));
        const ending = random.integer(0, 2);
        if (ending === 1) raw.socket.end();
        if (ending === 2) await new Promise((resolve) => setTimeout(resolve, random.integer(0, 5)));
        raw.close();

        if (index % 10 === 0) {
          const block = bytes(random, 4096);
          const at = 7 * MiB + 4096 * random.integer(0, 255);
          bystander.sendRequest(Command.WRITE, at, 4096, { payload: block, cookie: BigInt(index) });
          expect(await bystander.readReply(), `seed ${seed} session ${index}`).toMatchObject({ error: 0 });
          bystander.sendRequest(Command.READ, at, 4096);
          const reply = (await bystander.readReply(4096))!;
          expect(Buffer.compare(reply.payload, block), `seed ${seed} session ${index}`).toBe(0);
        }
      }
      // Every fuzz connection goes away (each was closed by its client); the bystander stays.
      for (let wait = 0; wait < 100 && running.server.connectionCount > 1; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(running.server.connectionCount, `seed ${seed}`).toBe(1);
      const fresh = (await RawClient.go(running.socketPath, 'fss0')).client;
      fresh.sendRequest(Command.READ, 0, 512);
      expect((await fresh.readReply(512))!.error).toBe(0);
      fresh.close();
    } finally {
      bystander.close();
      await running.close();
      dir.remove();
    }
  });
});
