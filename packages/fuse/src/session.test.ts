/**
 * Goal: FuseSession answers every request the way the kernel expects, without a kernel.
 * Method: requests are built byte by byte as the kernel lays them out (abi.ts), handed to the
 * session in fake slots, and the replies it writes are decoded and checked field by field
 * against the device behind it (a MemoryBlockDevice, or a FaultyBlockDevice for errors, or a
 * device whose calls we complete by hand to hold requests in flight).
 */
import { type BlockDevice, FaultyBlockDevice, MemoryBlockDevice } from '@fss/core';
import { patternBytes } from '@fss/core/testing';
import { describe, expect, it } from 'vitest';
import {
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_ROOT_ID,
  InitFlag,
  Opcode,
  OpenFlag,
  SetattrValid,
  Size,
} from './abi';
import { getU64, setU64 } from './codec';
import { FILE_NODE_ID, type FuseRequest, FuseSession } from './session';

const MAX_WRITE = 1 << 20;
const SLOT_BYTES = 80 + MAX_WRITE;

interface Reply {
  error: number;
  unique: number;
  body: Uint8Array;
  view: DataView;
}

/** A session over `device`, with helpers that send one request and collect its replies. */
function harness(device: BlockDevice, options: { readOnly?: boolean } = {}) {
  const replies: Reply[] = [];
  let released = 0;
  let unique = 100;
  const session = new FuseSession({
    device,
    fileName: 'disk',
    readOnly: options.readOnly ?? false,
    maxWriteBytes: MAX_WRITE,
    uid: 0,
    gid: 0,
  });
  /** Sends opcode with `body` (the op struct, then payload) to `nodeId`; returns its unique. */
  function send(opcode: number, nodeId: number, body: Uint8Array = new Uint8Array(0)): number {
    const bytes = new Uint8Array(SLOT_BYTES);
    const view = new DataView(bytes.buffer);
    const length = Size.IN_HEADER + body.length;
    const id = unique++;
    view.setUint32(0, length, true);
    view.setUint32(4, opcode, true);
    setU64(view, 8, id);
    setU64(view, 16, nodeId);
    bytes.set(body, Size.IN_HEADER);
    const request: FuseRequest = {
      bytes,
      view,
      length,
      reply(reply) {
        const copy = new Uint8Array(reply); // a copy: Buffer.prototype.slice would share the scratch memory
        const replyView = new DataView(copy.buffer);
        expect(replyView.getUint32(0, true)).toBe(copy.length); // the header's len is the write's length
        replies.push({
          error: replyView.getInt32(4, true),
          unique: getU64(replyView, 8),
          body: copy.subarray(Size.OUT_HEADER),
          view: new DataView(copy.buffer, Size.OUT_HEADER),
        });
      },
      release() {
        released++;
      },
    };
    session.handle(request);
    return id;
  }
  function struct(bytes: number, fill: (view: DataView) => void, payload?: Uint8Array): Uint8Array {
    const body = new Uint8Array(bytes + (payload?.length ?? 0));
    fill(new DataView(body.buffer));
    if (payload !== undefined) body.set(payload, bytes);
    return body;
  }
  function init(flags = 0xffffffff): Reply {
    send(
      Opcode.INIT,
      0,
      struct(64, (view) => {
        view.setUint32(0, 7, true);
        view.setUint32(4, 45, true);
        view.setUint32(8, 131072, true);
        view.setUint32(12, flags, true);
      }),
    );
    return replies.at(-1)!;
  }
  const io = (offset: number, size: number, payload?: Uint8Array) =>
    struct(
      40,
      (view) => {
        setU64(view, 0, 1);
        setU64(view, 8, offset);
        view.setUint32(16, size, true);
      },
      payload,
    );
  return {
    session,
    replies,
    /** The one reply to request `id`. */
    replyTo(id: number): Reply {
      const found = replies.filter((reply) => reply.unique === id);
      expect(found.length, `replies to ${id}`).toBe(1);
      return found[0]!;
    },
    released: () => released,
    send,
    struct,
    init,
    read: (offset: number, size: number) => send(Opcode.READ, FILE_NODE_ID, io(offset, size)),
    write: (offset: number, data: Uint8Array) =>
      send(Opcode.WRITE, FILE_NODE_ID, io(offset, data.length, data)),
    open: (flags: number) =>
      send(
        Opcode.OPEN,
        FILE_NODE_ID,
        struct(8, (view) => view.setUint32(0, flags, true)),
      ),
  };
}

/** Resolves after pending promise callbacks ran (device calls of a MemoryBlockDevice). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('INIT', () => {
  it('answers 7.38 with max_write 1 MiB, 256 pages, and only the flags both sides want', () => {
    const h = harness(new MemoryBlockDevice(4096));
    const reply = h.init(InitFlag.ASYNC_DIO | InitFlag.MAX_PAGES | (1 << 16)); // 1<<16: writeback cache, not wanted
    expect(reply.error).toBe(0);
    expect(reply.body.length).toBe(Size.INIT_OUT);
    expect(reply.view.getUint32(0, true)).toBe(7);
    expect(reply.view.getUint32(4, true)).toBe(FUSE_KERNEL_MINOR_VERSION);
    expect(reply.view.getUint32(8, true)).toBe(131072); // max_readahead echoed
    expect(reply.view.getUint32(12, true)).toBe(InitFlag.ASYNC_DIO | InitFlag.MAX_PAGES);
    expect(reply.view.getUint32(20, true)).toBe(MAX_WRITE);
    expect(reply.view.getUint16(28, true)).toBe(256);
    expect(h.session.stats.init).toEqual({
      kernelMinor: 45,
      flags: InitFlag.ASYNC_DIO | InitFlag.MAX_PAGES,
      maxWriteBytes: MAX_WRITE,
    });
  });

  it('refuses requests before INIT (EIO) and another major version (EPROTO)', () => {
    const h = harness(new MemoryBlockDevice(4096));
    h.send(Opcode.GETATTR, FILE_NODE_ID);
    expect(h.replies[0]!.error).toBe(-5);
    h.send(
      Opcode.INIT,
      0,
      h.struct(64, (view) => view.setUint32(0, 8, true)),
    );
    expect(h.replies[1]!.error).toBe(-71);
    expect(h.released()).toBe(2);
  });
});

describe('the tree: one directory, one file', () => {
  it('LOOKUP finds the file with the exact device size; other names are ENOENT', () => {
    const h = harness(new MemoryBlockDevice(1_000_001));
    h.init();
    h.send(Opcode.LOOKUP, FUSE_ROOT_ID, new TextEncoder().encode('disk\0'));
    const entry = h.replies.at(-1)!;
    expect(entry.error).toBe(0);
    expect(getU64(entry.view, 0)).toBe(FILE_NODE_ID);
    expect(getU64(entry.view, 40 + 8)).toBe(1_000_001); // attr.size
    expect(entry.view.getUint32(40 + 60, true) & 0o170000).toBe(0o100000); // S_IFREG
    h.send(Opcode.LOOKUP, FUSE_ROOT_ID, new TextEncoder().encode('other\0'));
    expect(h.replies.at(-1)!.error).toBe(-2);
    h.send(Opcode.LOOKUP, FILE_NODE_ID, new TextEncoder().encode('disk\0'));
    expect(h.replies.at(-1)!.error).toBe(-2);
  });

  it('GETATTR: the root is a directory, the file 0600 (0400 read-only) with the device size', () => {
    const h = harness(new MemoryBlockDevice(12_345), { readOnly: true });
    h.init();
    h.send(Opcode.GETATTR, FUSE_ROOT_ID, new Uint8Array(16));
    expect(h.replies.at(-1)!.view.getUint32(16 + 60, true)).toBe(0o040755);
    h.send(Opcode.GETATTR, FILE_NODE_ID, new Uint8Array(16));
    const file = h.replies.at(-1)!;
    expect(getU64(file.view, 16 + 8)).toBe(12_345);
    expect(file.view.getUint32(16 + 60, true)).toBe(0o100400);
    h.send(Opcode.GETATTR, 99, new Uint8Array(16));
    expect(h.replies.at(-1)!.error).toBe(-2);
  });

  it('SETATTR refuses a resize, chmod or chown (EPERM) and accepts what changes nothing', () => {
    const h = harness(new MemoryBlockDevice(8192));
    h.init();
    const setattr = (valid: number, size: number) =>
      h.send(
        Opcode.SETATTR,
        FILE_NODE_ID,
        h.struct(Size.SETATTR_IN, (view) => {
          view.setUint32(0, valid, true);
          setU64(view, 16, size);
        }),
      );
    setattr(SetattrValid.SIZE, 0);
    expect(h.replies.at(-1)!.error).toBe(-1);
    setattr(SetattrValid.MODE, 8192);
    expect(h.replies.at(-1)!.error).toBe(-1);
    setattr(SetattrValid.SIZE | SetattrValid.MTIME, 8192);
    expect(h.replies.at(-1)!.error).toBe(0);
    expect(getU64(h.replies.at(-1)!.view, 16 + 8)).toBe(8192);
  });

  it('READDIR lists ., .. and the file, resuming at the offset it is given', () => {
    const h = harness(new MemoryBlockDevice(4096));
    h.init();
    const names = (reply: Reply) => {
      const found: string[] = [];
      for (let at = 0; at < reply.body.length; ) {
        const length = reply.view.getUint32(at + 16, true);
        found.push(new TextDecoder().decode(reply.body.subarray(at + 24, at + 24 + length)));
        at += (24 + length + 7) & ~7;
      }
      return found;
    };
    const readdir = (offset: number) =>
      h.send(
        Opcode.READDIR,
        FUSE_ROOT_ID,
        h.struct(40, (view) => {
          setU64(view, 8, offset);
          view.setUint32(16, 4096, true);
        }),
      );
    readdir(0);
    expect(names(h.replies.at(-1)!)).toEqual(['.', '..', 'disk']);
    readdir(2);
    expect(names(h.replies.at(-1)!)).toEqual(['disk']);
    readdir(3);
    expect(h.replies.at(-1)!.body.length).toBe(0);
  });

  it('OPEN: every open is answered with the default FOPEN flags; read-only refuses writing opens', () => {
    const rw = harness(new MemoryBlockDevice(4096));
    rw.init();
    rw.open(2); // O_RDWR
    expect(rw.replies.at(-1)!.error).toBe(0);
    expect(rw.replies.at(-1)!.view.getUint32(8, true)).toBe(
      OpenFlag.DIRECT_IO | OpenFlag.PARALLEL_DIRECT_WRITES,
    );
    const ro = harness(new MemoryBlockDevice(4096), { readOnly: true });
    ro.init();
    ro.open(1); // O_WRONLY
    expect(ro.replies.at(-1)!.error).toBe(-30);
    ro.open(2);
    expect(ro.replies.at(-1)!.error).toBe(-30);
    ro.open(0);
    expect(ro.replies.at(-1)!.error).toBe(0);
  });
});

describe('READ and WRITE', () => {
  it('reads what the device holds; past the end reads 0 bytes, across it is truncated', async () => {
    const device = new MemoryBlockDevice(patternBytes(10_000, 1));
    const h = harness(device);
    h.init();
    const [whole, tail, atEnd, beyond] = [4096, 8192, 10_000, 20_000].map((offset) => h.read(offset, 4096));
    await settle();
    expect(h.replyTo(whole!).body).toEqual(device.bytes.subarray(4096, 8192));
    expect(h.replyTo(tail!).body).toEqual(device.bytes.subarray(8192, 10_000));
    expect(h.replyTo(atEnd!).body.length).toBe(0);
    expect(h.replyTo(beyond!).body.length).toBe(0);
    expect(h.session.stats.readBytes).toBe(4096 + 1808);
  });

  it('writes land on the device; a write at the end is ENOSPC, one across it is short', async () => {
    const device = new MemoryBlockDevice(10_000);
    const h = harness(device);
    h.init();
    const data = patternBytes(4096, 2);
    const whole = h.write(512, data);
    const across = h.write(8192, data);
    const atEnd = h.write(10_000, data);
    await settle();
    expect(device.bytes.subarray(512, 512 + 4096)).toEqual(data);
    expect(device.bytes.subarray(8192)).toEqual(data.subarray(0, 1808));
    expect(h.replyTo(whole).view.getUint32(0, true)).toBe(4096);
    expect(h.replyTo(across).view.getUint32(0, true)).toBe(1808);
    expect(h.replyTo(atEnd).error).toBe(-28);
  });

  it('read-only: WRITE is EROFS and the device is untouched', async () => {
    const device = new MemoryBlockDevice(8192);
    const h = harness(device, { readOnly: true });
    h.init();
    h.write(0, patternBytes(512, 3));
    await settle();
    expect(h.replies.at(-1)!.error).toBe(-30);
    expect(device.bytes.every((byte) => byte === 0)).toBe(true);
  });

  it('device errors become the errno the device threw (ENXIO, EIO, ENOSPC)', async () => {
    const device = new FaultyBlockDevice(new MemoryBlockDevice(8192));
    const h = harness(device);
    h.init();
    device.faults.failNext('read', 'ENXIO');
    h.read(0, 512);
    await settle();
    device.faults.failNext('write', 'EIO');
    h.write(0, patternBytes(512, 4));
    await settle();
    device.faults.failNext('write', 'ENOSPC');
    h.write(0, patternBytes(512, 4));
    await settle();
    expect(h.replies.slice(1).map((reply) => reply.error)).toEqual([-6, -5, -28]);
    expect(h.session.stats.deviceErrors).toBe(3);
  });

  it('keeps many requests in flight and answers them in completion order', async () => {
    const inner = new MemoryBlockDevice(1 << 20);
    const pending: Array<() => void> = [];
    const held: BlockDevice = {
      size: inner.size,
      logicalSectorSize: 512,
      readOnly: false,
      read: (target, offset) =>
        new Promise((resolve) => pending.push(() => resolve(inner.read(target, offset)))),
      write: (source, offset) =>
        new Promise((resolve) => pending.push(() => resolve(inner.write(source, offset)))),
      flush: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
    const h = harness(held);
    h.init();
    const uniques = Array.from({ length: 16 }, (_, index) =>
      h.write(index * 4096, patternBytes(4096, index)),
    );
    expect(h.session.stats.inFlight).toBe(16);
    expect(h.replies.length).toBe(1); // only INIT so far
    for (const complete of pending.reverse()) complete();
    await settle();
    expect(h.session.stats.maxInFlight).toBe(16);
    expect(h.replies.slice(1).map((reply) => reply.unique)).toEqual([...uniques].reverse());
    expect(h.released()).toBe(17);
    await h.session.whenIdle();
  });
});

describe('housekeeping requests', () => {
  it('FORGET and BATCH_FORGET get no reply but free their slot; unknown opcodes are ENOSYS', () => {
    const h = harness(new MemoryBlockDevice(4096));
    h.init();
    h.send(Opcode.FORGET, FILE_NODE_ID, new Uint8Array(8));
    h.send(Opcode.BATCH_FORGET, 0, new Uint8Array(8));
    expect(h.replies.length).toBe(1);
    expect(h.released()).toBe(3);
    h.send(Opcode.MKDIR, FUSE_ROOT_ID, new Uint8Array(8));
    h.send(Opcode.STATX, FILE_NODE_ID, new Uint8Array(16));
    expect(h.replies.slice(1).map((reply) => reply.error)).toEqual([-38, -38]);
  });

  it('INTERRUPT: of a running request, no reply (it completes normally); of an unknown one, EAGAIN', async () => {
    let complete!: () => void;
    const inner = new MemoryBlockDevice(8192);
    const device: BlockDevice = {
      ...inner,
      size: inner.size,
      logicalSectorSize: 512,
      readOnly: false,
      read: (target, offset) =>
        new Promise((resolve) => (complete = () => resolve(inner.read(target, offset)))),
      write: (source, offset) => inner.write(source, offset),
      flush: () => inner.flush(),
      close: () => inner.close(),
    };
    const h = harness(device);
    h.init();
    const reading = h.read(0, 512);
    const interrupt = (target: number) =>
      h.send(
        Opcode.INTERRUPT,
        0,
        h.struct(8, (view) => setU64(view, 0, target)),
      );
    interrupt(reading);
    expect(h.replies.length).toBe(1);
    const stray = interrupt(99_999);
    expect(h.replies.at(-1)).toMatchObject({ unique: stray, error: -11 });
    complete();
    await settle();
    expect(h.replies.at(-1)).toMatchObject({ unique: reading, error: 0 });
    expect(h.session.stats.interrupts).toBe(2);
  });

  it('FSYNC flushes the device; FLUSH and RELEASE answer at once; DESTROY ends the session', async () => {
    const device = new MemoryBlockDevice(4096);
    let flushes = 0;
    device.flush = async () => {
      flushes++;
    };
    const h = harness(device);
    h.init();
    h.send(Opcode.FLUSH, FILE_NODE_ID, new Uint8Array(24));
    expect(flushes).toBe(0);
    h.send(Opcode.FSYNC, FILE_NODE_ID, new Uint8Array(16));
    await settle();
    expect(flushes).toBe(1);
    h.send(Opcode.RELEASE, FILE_NODE_ID, new Uint8Array(24));
    h.send(Opcode.DESTROY, 0);
    expect(h.session.destroyed).toBe(true);
    expect(h.replies.slice(1).map((reply) => reply.error)).toEqual([0, 0, 0, 0]);
  });

  it('STATFS reports the device in file-system blocks', () => {
    const h = harness(new MemoryBlockDevice(1 << 20));
    h.init();
    h.send(Opcode.STATFS, FILE_NODE_ID);
    const reply = h.replies.at(-1)!;
    expect(getU64(reply.view, 0)).toBe(256);
    expect(reply.view.getUint32(40, true)).toBe(4096);
  });
});
