/**
 * FuseChannel: the reader threads of one FUSE connection and the slots they read into.
 *
 * Notes on the design (the numbers behind it are in the README's "Why this design").
 *
 * Threads. Reader r reads /dev/fuse through its own descriptor: r = 0 uses the session's,
 * the others a clone (FUSE_DEV_IOC_CLONE). A reply must be written to the descriptor its
 * request came from, because the kernel looks it up among the requests read through that
 * descriptor only; each request carries its descriptor for that reason.
 *
 * Memory. One SharedArrayBuffer holds every slot, allocated once when the channel starts
 * (STYLE 18: a limit on everything, buffers up front). A slot holds the largest message
 * (in_header + write_in + max_write bytes) and is placed so that a WRITE's payload, which
 * starts 80 bytes into the message, is 4096-aligned: the payload can go to an O_DIRECT device
 * as it lies. A READ's data is read into the same aligned place, its reply header written in
 * the 16 bytes before it, and the reply is one write of one contiguous range. No request or
 * reply byte is copied in user space.
 *
 * Handover. The reader posts the slot's index (a number) to the main thread; the length is
 * in a shared Int32Array. The main thread answers and sets the slot FREE; the reader that
 * owns it waits on its own wake word when all its slots are busy, which is the back-pressure:
 * the kernel queues what we cannot take.
 *
 * Stopping. Normally the connection ends by itself when the filesystem is unmounted (every
 * read then fails with ENODEV and the readers exit). `stop()` also sets the stop word and
 * signals an eventfd every reader polls, because nothing else wakes a thread blocked waiting
 * for /dev/fuse.
 */
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import {
  addressOf,
  errnoError,
  koffiEntryPath,
  lastErrno,
  libc,
  POLL_PROTOTYPE,
  PREAD_PROTOTYPE,
  PWRITE_PROTOTYPE,
  READ_PROTOTYPE,
  WRITE_PROTOTYPE,
} from '@fss/blockdev-linux';
import { assert, FssError } from '@fss/core';
import { FUSE_DEV_IOC_CLONE, FUSE_MIN_READ_BUFFER, WRITE_PAYLOAD_OFFSET } from './abi';
import {
  CONTROL_ANSWERED,
  CONTROL_READERS_MAX,
  CONTROL_SLOT_BASE,
  CONTROL_STOP,
  CONTROL_WAKE_BASE,
  READER_SOURCE,
  type ReaderData,
  type ReaderIo,
  type ReaderMessage,
  type ReaderReplies,
  SlotState,
} from './reader-worker';
import type { FuseRequest } from './session';

const PAGE_BYTES = 4096;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;

export interface FuseChannelOptions {
  /** The session's /dev/fuse descriptor (the one named in the mount's fd= option). */
  fuseFd: number;
  /** Reader threads (1 to 15). */
  readerCount: number;
  /** Slots in all (divided among the readers): requests in flight at most. */
  slotCount: number;
  /** Largest WRITE payload (the INIT max_write). */
  maxWriteBytes: number;
  /** What the readers answer themselves (GETATTR, LOOKUP, STATFS, ...), from the session. */
  readerReplies: ReaderReplies;
  /**
   * The device's descriptor, when the readers serve READ and WRITE themselves (reader-worker.ts,
   * "Serving I/O"); its memory alignment must be at most a page (the payloads are page-aligned).
   */
  io?: Omit<ReaderIo, 'preadPrototype' | 'pwritePrototype'>;
  /** Called on the main thread with each request the readers do not answer themselves. */
  onRequest: (request: FuseRequest) => void;
  /** Called once when the kernel ended the connection (unmount or abort), or a reader failed. */
  onEnd: (reason: FssError | undefined) => void;
}

/** One reader thread and its descriptor. */
interface Reader {
  worker: Worker;
  fd: number;
  readonly ownsFd: boolean;
  exited: Promise<void>;
}

export class FuseChannel {
  private readonly options: FuseChannelOptions;
  private readonly data: SharedArrayBuffer;
  private readonly control: Int32Array;
  private readonly lengths: Int32Array;
  private readonly slotBytes: number;
  private readonly requests: FuseRequest[] = [];
  private readonly slotOwner: number[] = [];
  private readonly readers: Reader[] = [];
  private readonly stopFd: number;
  private ended = false;
  private abandoned = false;
  private stopped: Promise<void> | undefined;

  constructor(options: FuseChannelOptions) {
    assert(options.readerCount >= 1 && options.readerCount <= CONTROL_READERS_MAX, 'reader count 1..15');
    assert(options.slotCount >= options.readerCount, 'at least one slot per reader');
    assert(options.maxWriteBytes % PAGE_BYTES === 0, 'max write must be whole pages');
    this.options = options;
    this.slotBytes = Math.max(FUSE_MIN_READ_BUFFER, WRITE_PAYLOAD_OFFSET + options.maxWriteBytes);
    const stride = roundUp(this.slotBytes, PAGE_BYTES) + PAGE_BYTES;
    this.data = new SharedArrayBuffer(options.slotCount * stride + PAGE_BYTES);
    this.control = new Int32Array(new SharedArrayBuffer(4 * (CONTROL_SLOT_BASE + options.slotCount)));
    this.lengths = new Int32Array(new SharedArrayBuffer(4 * options.slotCount));
    const base = Number(addressOf(new Uint8Array(this.data)) % BigInt(PAGE_BYTES));
    const firstPayload = roundUp(base + WRITE_PAYLOAD_OFFSET, PAGE_BYTES) - base;
    const slotOffsets: number[] = [];
    for (let slot = 0; slot < options.slotCount; slot++) {
      const offset = firstPayload - WRITE_PAYLOAD_OFFSET + slot * stride;
      slotOffsets.push(offset);
      this.requests.push(this.makeRequest(slot, offset));
    }
    this.stopFd = libc().eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (this.stopFd < 0) throw errnoError(lastErrno(), 'eventfd');
    try {
      for (let index = 0; index < options.readerCount; index++) this.startReader(index, slotOffsets);
    } catch (error) {
      this.abandon();
      throw error;
    }
  }

  /** The aligned address the payloads start at, for tests: every slot's payload is 4096-aligned. */
  payloadAddress(slot: number): bigint {
    return addressOf(this.requests[slot]!.bytes.subarray(WRITE_PAYLOAD_OFFSET));
  }

  private makeRequest(slot: number, offset: number): FuseRequest {
    const bytes = new Uint8Array(this.data, offset, this.slotBytes);
    const view = new DataView(this.data, offset, this.slotBytes);
    const channel = this;
    return {
      bytes,
      view,
      get length() {
        return channel.lengths[slot]!;
      },
      reply(reply: Uint8Array) {
        const fd = channel.readers[channel.slotOwner[slot]!]!.fd;
        const written = writeSync(fd, reply);
        assert(written === reply.length, `short FUSE reply write: ${written} of ${reply.length}`);
      },
      release() {
        channel.release(slot);
      },
    };
  }

  private startReader(index: number, slotOffsets: number[]): void {
    const fd = index === 0 ? this.options.fuseFd : cloneFuseFd(this.options.fuseFd);
    const slots: number[] = [];
    for (let slot = index; slot < this.options.slotCount; slot += this.options.readerCount) {
      slots.push(slot);
      this.slotOwner[slot] = index;
    }
    const workerData: ReaderData = {
      koffiPath: koffiEntryPath(),
      pollPrototype: POLL_PROTOTYPE,
      readPrototype: READ_PROTOTYPE,
      fuseFd: fd,
      stopFd: this.stopFd,
      readerIndex: index,
      data: this.data,
      control: this.control.buffer as SharedArrayBuffer,
      lengths: this.lengths.buffer as SharedArrayBuffer,
      slots,
      slotOffsets: slots.map((slot) => slotOffsets[slot]!),
      slotBytes: this.slotBytes,
      writePrototype: WRITE_PROTOTYPE,
      replies: this.options.readerReplies,
      io:
        this.options.io === undefined
          ? undefined
          : { ...this.options.io, preadPrototype: PREAD_PROTOTYPE, pwritePrototype: PWRITE_PROTOTYPE },
    };
    const worker = new Worker(READER_SOURCE, { eval: true, workerData });
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.on('message', (message: ReaderMessage) => this.onMessage(message));
    worker.on('error', (error) => this.end(new FssError('EIO', `FUSE reader failed: ${error.message}`)));
    this.readers.push({ worker, fd, ownsFd: index !== 0, exited });
  }

  private onMessage(message: ReaderMessage): void {
    if (typeof message === 'number') {
      assert(Atomics.load(this.control, CONTROL_SLOT_BASE + message) === SlotState.HANDED, 'slot not handed');
      this.options.onRequest(this.requests[message]!);
      return;
    }
    if (message.type === 'ended') this.end(undefined);
    else this.end(new FssError('EIO', `reading /dev/fuse failed: ${message.code} ${message.message}`));
  }

  private end(reason: FssError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.options.onEnd(reason);
  }

  private release(slot: number): void {
    const state = CONTROL_SLOT_BASE + slot;
    assert(Atomics.load(this.control, state) === SlotState.HANDED, `slot ${slot} released twice`);
    Atomics.store(this.control, state, SlotState.FREE);
    const wake = CONTROL_WAKE_BASE + this.slotOwner[slot]!;
    Atomics.add(this.control, wake, 1);
    Atomics.notify(this.control, wake);
  }

  /** Requests the readers answered themselves, without the main thread. */
  get readerAnswers(): number {
    return Atomics.load(this.control, CONTROL_ANSWERED);
  }

  /** Resolves when every reader has exited (the kernel ended the connection, or stop()). */
  get finished(): Promise<void> {
    return Promise.all(this.readers.map((reader) => reader.exited)).then(() => undefined);
  }

  /**
   * Stops every reader (they exit at their next wait) and closes the cloned descriptors and
   * the eventfd. The session descriptor stays open: its owner closes it.
   */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      Atomics.store(this.control, CONTROL_STOP, 1);
      for (let index = 0; index < this.readers.length; index++) {
        Atomics.add(this.control, CONTROL_WAKE_BASE + index, 1);
        Atomics.notify(this.control, CONTROL_WAKE_BASE + index);
      }
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(1n);
      writeSync(this.stopFd, one);
      await this.finished;
      this.abandon();
    })();
    return this.stopped;
  }

  /**
   * For the process's exit hook: stop the readers and close the cloned descriptors now,
   * without waiting for the threads (the process is going away; a reader still polling a
   * closed descriptor only sees POLLNVAL).
   */
  abortNow(): void {
    Atomics.store(this.control, CONTROL_STOP, 1);
    this.abandon();
  }

  /** Closes what we opened; only once no reader can use it any more. */
  private abandon(): void {
    if (this.abandoned) return; // a descriptor number closed twice could be someone else's by then
    this.abandoned = true;
    for (const reader of this.readers) if (reader.ownsFd) closeQuietly(reader.fd);
    closeQuietly(this.stopFd);
  }
}

/** A new /dev/fuse descriptor attached to the session of `fuseFd` (FUSE_DEV_IOC_CLONE). */
export function cloneFuseFd(fuseFd: number): number {
  const clone = openSync('/dev/fuse', constants.O_RDWR | constants.O_NONBLOCK);
  const argument = new Uint8Array(4);
  new DataView(argument.buffer).setUint32(0, fuseFd, true);
  if (libc().ioctlBytes(clone, FUSE_DEV_IOC_CLONE, argument) < 0) {
    const errno = lastErrno();
    closeSync(clone);
    throw errnoError(errno, 'ioctl(FUSE_DEV_IOC_CLONE)', '/dev/fuse');
  }
  return clone;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

function roundUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit;
}
