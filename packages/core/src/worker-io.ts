/**
 * Worker I/O: positioned reads and writes of a device's descriptor by threads other than the
 * one that owns the device, under a gate the owner controls.
 *
 * Why. A kernel block device fss serves (a loop device over its FUSE file) sends every
 * request through fssd's main JavaScript thread, which spends 50–70 µs on each (decode,
 * promise chains, the libuv pool hand-off, the reply): that caps 4 KiB random I/O at ~15k
 * IOPS whatever the disk. Most requests need none of the engine: an origin read always goes
 * straight to the device, and so does an origin write while no snapshot needs a copy. The
 * threads that read the requests can do those themselves (pread/pwrite on the device's
 * descriptor, then the reply), and leave the main thread only what needs copy-on-write.
 *
 * The gate. Shared Int32 words (WorkerIoWord): PERMITS, a bit per kind of request
 * (WorkerIoPermit.READ, WRITE) the owner allows off its thread now, and for each kind its
 * worker requests under way (READS_IN_FLIGHT, WRITES_IN_FLIGHT; IN_FLIGHT(bit) below). A worker enters and leaves like this (the protocol; a worker evaluated
 * from source text cannot import this module, so it repeats these lines, see
 * WORKER_IO_ENTER_SOURCE):
 *
 *   enter(bit):  if (load(PERMITS) & bit) == 0          -> not permitted: hand to the owner
 *                add(IN_FLIGHT(bit), 1)
 *                if (load(PERMITS) & bit) == 0          -> leave(bit), hand to the owner
 *                do the I/O
 *   leave(bit):  if sub(IN_FLIGHT(bit), 1) == 1         -> notify(IN_FLIGHT(bit))
 *
 * The owner revokes a permit with `revoke(bits)`: store PERMITS without the bits, then wait
 * until IN_FLIGHT of each revoked kind is 0. Atomics are sequentially consistent, so either a worker's second
 * load sees the permit gone (it backs out) or the owner's wait sees its IN_FLIGHT (it waits
 * for it): after `revoke` resolves no worker request of a revoked kind is under way and none
 * can start. That is what the engine needs at a snapshot moment (no origin write in flight,
 * CopyOnWrite.takeSnapshotMoment) and what a device needs before it closes its descriptor (a
 * number a later open may reuse). Each kind has its own count so that revoking writes never
 * waits on a stream of reads, which may go on meanwhile (a single count shared by both kinds
 * starved the revoke under steady reads); the wait is for single syscalls, so it is short.
 *
 * A request handed back is served by the owner as usual, so a worker may also hand back
 * whatever it cannot do (unaligned, failed): the owner's path says what the error is.
 */
import { assert } from './assert';

/** Word indices in `WorkerIo.words`. */
export const WorkerIoWord = {
  /** WorkerIoPermit bits: what workers may do now. */
  PERMITS: 0,
  /** Worker reads, and writes, under way. */
  READS_IN_FLIGHT: 1,
  WRITES_IN_FLIGHT: 2,
  /** Requests workers completed, reads and writes (statistics only). */
  READS: 3,
  WRITES: 4,
} as const;
export const WORKER_IO_WORDS = 5;

/** The in-flight word of one permit bit. */
function inFlightWord(bit: number): number {
  return bit === WorkerIoPermit.READ ? WorkerIoWord.READS_IN_FLIGHT : WorkerIoWord.WRITES_IN_FLIGHT;
}

export const WorkerIoPermit = { READ: 1, WRITE: 2 } as const;

/** What a device lets other threads do with its descriptor. */
export interface WorkerIo {
  /** The descriptor for pread/pwrite (shared by every thread of the process). */
  readonly fd: number;
  /** Offsets and lengths must be multiples of this (O_DIRECT's rule; 1 when buffered). */
  readonly offsetAlignment: number;
  /** Buffer addresses must be multiples of this (1 when buffered). */
  readonly memoryAlignment: number;
  /** The device's size: workers never read or write past it. */
  readonly size: number;
  /** The gate's shared words (WorkerIoWord). */
  readonly words: Int32Array;
}

/** Atomics.waitAsync (Node ≥ 16; ES2024, which our `lib` setting predates). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      array: Int32Array,
      index: number,
      value: number,
      timeoutMs: number,
    ): { async: boolean; value: Promise<string> | string };
  }
).waitAsync;

/** The owner's side of the gate. */
export class WorkerIoGate {
  readonly words: Int32Array;

  constructor(permits: number) {
    this.words = new Int32Array(new SharedArrayBuffer(4 * WORKER_IO_WORDS));
    this.permit(permits);
  }

  get permits(): number {
    return Atomics.load(this.words, WorkerIoWord.PERMITS);
  }

  /** Worker requests under way, of both kinds. */
  get inFlight(): number {
    return (
      Atomics.load(this.words, WorkerIoWord.READS_IN_FLIGHT) +
      Atomics.load(this.words, WorkerIoWord.WRITES_IN_FLIGHT)
    );
  }

  /** Worker requests completed so far. */
  get completed(): { reads: number; writes: number } {
    return {
      reads: Atomics.load(this.words, WorkerIoWord.READS),
      writes: Atomics.load(this.words, WorkerIoWord.WRITES),
    };
  }

  /** Sets the permits (granting takes effect at once: no wait is ever needed to widen them). */
  permit(permits: number): void {
    assert(Number.isInteger(permits), 'permits are bits');
    assert((permits & ~(WorkerIoPermit.READ | WorkerIoPermit.WRITE)) === 0, `unknown permit bits ${permits}`);
    Atomics.store(this.words, WorkerIoWord.PERMITS, permits);
  }

  /**
   * Withdraws `bits`; resolves once no worker request of a withdrawn kind is under way, so
   * none runs until they are granted again.
   */
  async revoke(bits: number): Promise<void> {
    this.permit(this.permits & ~bits);
    for (const bit of [WorkerIoPermit.READ, WorkerIoPermit.WRITE]) {
      if ((bits & bit) !== 0) await this.drained(inFlightWord(bit));
    }
  }

  /** Resolves when the word is 0 (the workers notify when they bring it there). */
  private async drained(word: number): Promise<void> {
    for (;;) {
      const seen = Atomics.load(this.words, word);
      assert(seen >= 0, `worker I/O count ${seen} below zero`);
      if (seen === 0) return;
      // A bounded wait: a notify that raced the load is then only a short delay.
      const { async, value } = waitAsync(this.words, word, seen, 50);
      if (async) await value;
    }
  }

  /** The WorkerIo of a descriptor under this gate. */
  workerIo(descriptor: Omit<WorkerIo, 'words'>): WorkerIo {
    assert(Number.isInteger(descriptor.fd) && descriptor.fd >= 0, 'a worker I/O descriptor is open');
    assert(descriptor.offsetAlignment >= 1 && descriptor.memoryAlignment >= 1, 'alignments are ≥ 1');
    return { ...descriptor, words: this.words };
  }
}

/**
 * The worker's side, as source text for a worker evaluated with `eval: true` (which cannot
 * import this module): defines `workerIoEnter(words, bit)` → boolean and
 * `workerIoLeave(words, bit, done)`, `done` false when the request is handed back (it is
 * then not counted as completed).
 */
export const WORKER_IO_ENTER_SOURCE = `
function workerIoInFlightWord(bit) {
  return bit === ${WorkerIoPermit.READ} ? ${WorkerIoWord.READS_IN_FLIGHT} : ${WorkerIoWord.WRITES_IN_FLIGHT};
}
function workerIoEnter(words, bit) {
  if ((Atomics.load(words, ${WorkerIoWord.PERMITS}) & bit) === 0) return false;
  Atomics.add(words, workerIoInFlightWord(bit), 1);
  if ((Atomics.load(words, ${WorkerIoWord.PERMITS}) & bit) !== 0) return true;
  workerIoLeave(words, bit, false);
  return false;
}
function workerIoLeave(words, bit, done) {
  if (done) Atomics.add(words, bit === ${WorkerIoPermit.READ} ? ${WorkerIoWord.READS} : ${WorkerIoWord.WRITES}, 1);
  const word = workerIoInFlightWord(bit);
  if (Atomics.sub(words, word, 1) === 1) Atomics.notify(words, word);
}
`;
