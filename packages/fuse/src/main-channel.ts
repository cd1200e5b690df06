/**
 * MainChannel: the main thread reads /dev/fuse itself (non-blocking), a poller thread only
 * wakes it when it is idle (poller-worker.ts).
 */
import { closeSync, constants, readSync, writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { addressOf, errnoError, koffiEntryPath, lastErrno, libc, POLL_PROTOTYPE } from '@fss/blockdev-linux';
import { assert, FssError } from '@fss/core';
import { FUSE_MIN_READ_BUFFER, WRITE_PAYLOAD_OFFSET } from './abi';
import type { FuseChannelOptions } from './channel';
import { CONTROL_ARMED, CONTROL_STOP, CONTROL_WORDS, POLLER_SOURCE, type PollerData } from './poller-worker';
import type { FuseRequest } from './session';

const PAGE_BYTES = 4096;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;

interface Slot extends FuseRequest {
  length: number;
}

export class MainChannel {
  private readonly options: FuseChannelOptions;
  private readonly control = new Int32Array(new SharedArrayBuffer(4 * CONTROL_WORDS));
  private readonly free: Slot[] = [];
  private readonly slotBytes: number;
  private readonly stopFd: number;
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private pumping = false;
  private ended = false;
  private abandoned = false;
  private stopped: Promise<void> | undefined;

  constructor(options: FuseChannelOptions) {
    this.options = options;
    this.slotBytes = Math.max(FUSE_MIN_READ_BUFFER, WRITE_PAYLOAD_OFFSET + options.maxWriteBytes);
    const stride = Math.ceil(this.slotBytes / PAGE_BYTES) * PAGE_BYTES + PAGE_BYTES;
    const memory = Buffer.alloc(options.slotCount * stride + PAGE_BYTES);
    const base = Number(addressOf(memory) % BigInt(PAGE_BYTES));
    const first =
      Math.ceil((base + WRITE_PAYLOAD_OFFSET) / PAGE_BYTES) * PAGE_BYTES - base - WRITE_PAYLOAD_OFFSET;
    for (let index = 0; index < options.slotCount; index++) {
      const bytes = memory.subarray(first + index * stride, first + index * stride + this.slotBytes);
      this.free.push(this.makeSlot(bytes));
    }
    this.stopFd = libc().eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (this.stopFd < 0) throw errnoError(lastErrno(), 'eventfd');
    const workerData: PollerData = {
      koffiPath: koffiEntryPath(),
      pollPrototype: POLL_PROTOTYPE,
      fuseFd: options.fuseFd,
      stopFd: this.stopFd,
      control: this.control.buffer as SharedArrayBuffer,
    };
    this.worker = new Worker(POLLER_SOURCE, { eval: true, workerData });
    this.exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.on('message', () => this.pump());
    this.worker.on('error', (error) => this.end(new FssError('EIO', `FUSE poller failed: ${error.message}`)));
    this.arm();
  }

  private makeSlot(bytes: Uint8Array): Slot {
    const channel = this;
    const slot: Slot = {
      bytes,
      view: new DataView(bytes.buffer, bytes.byteOffset, bytes.length),
      length: 0,
      reply(reply: Uint8Array) {
        const written = writeSync(channel.options.fuseFd, reply);
        assert(written === reply.length, `short FUSE reply write: ${written} of ${reply.length}`);
      },
      release() {
        channel.free.push(slot);
        channel.pump();
      },
    };
    return slot;
  }

  private arm(): void {
    if (Atomics.load(this.control, CONTROL_ARMED) === 1) return;
    Atomics.store(this.control, CONTROL_ARMED, 1);
    Atomics.notify(this.control, CONTROL_ARMED);
  }

  /** Reads requests until the kernel has none (then arms the poller) or no slot is free. */
  private pump(): void {
    if (this.pumping || this.ended || this.stopped !== undefined) return;
    this.pumping = true;
    try {
      for (;;) {
        const slot = this.free.pop();
        if (slot === undefined) return; // a release pumps again
        let length: number;
        try {
          length = readSync(this.options.fuseFd, slot.bytes, 0, this.slotBytes, null);
        } catch (error) {
          this.free.push(slot);
          const code = (error as { code?: string }).code;
          if (code === 'EAGAIN') {
            this.arm();
            return;
          }
          if (code === 'ENOENT' || code === 'EINTR') continue;
          if (code === 'ENODEV' || code === 'ECONNABORTED') this.end(undefined);
          else this.end(new FssError('EIO', `reading /dev/fuse failed: ${(error as Error).message}`));
          return;
        }
        slot.length = length;
        this.options.onRequest(slot);
      }
    } finally {
      this.pumping = false;
    }
  }

  private end(reason: FssError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.options.onEnd(reason);
  }

  get finished(): Promise<void> {
    return this.exited;
  }

  stop(): Promise<void> {
    this.stopped ??= (async () => {
      Atomics.store(this.control, CONTROL_STOP, 1);
      Atomics.notify(this.control, CONTROL_ARMED);
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(1n);
      writeSync(this.stopFd, one);
      await this.exited;
      this.abandon();
    })();
    return this.stopped;
  }

  abortNow(): void {
    Atomics.store(this.control, CONTROL_STOP, 1);
    this.abandon();
  }

  private abandon(): void {
    if (this.abandoned) return;
    this.abandoned = true;
    try {
      closeSync(this.stopFd);
    } catch {
      // already closed
    }
  }
}
void constants;
