/**
 * ReadMerger: turns READ requests for back-to-back ranges into one device read.
 *
 * Why: a sequential reader (nbdcopy, qemu-img convert, kernel readahead) keeps dozens of
 * READs in flight, each the continuation of the previous one. One device read per request
 * means one thread-pool round trip each, and on a small machine the hand-offs (mutex, condition
 * variable, wake-ups) cost the main thread as much as the copying. Merging up to
 * MERGED_BYTES_MAX of consecutive requests into one read cuts that by the merge factor and
 * gives the device larger I/Os.
 *
 * How: the request loop hands every READ to add(). A READ that continues the open run (its
 * offset is the run's end) joins it; anything else closes the run and opens a new one. A run
 * is closed when a READ cannot join it (it reached MERGED_BYTES_MAX or MERGED_COUNT_MAX, or
 * the READ does not continue it). The open run starts in the next check phase of the event
 * loop (setImmediate), i.e. once every request that arrived in this I/O round has been parsed,
 * if the held-bytes limit below lets it; otherwise it stays open, keeps absorbing the READs
 * that continue it, and starts when buffers come back. A run is read into one pooled buffer,
 * and each request gets its own reply with its slice of it (all corked into one writev); the
 * buffer returns to the pool when the last reply has been sent.
 * If the merged read fails, each request is retried on its own (readOne, the path of a run of
 * one), so every reply carries the error of its own range, exactly as without merging; the
 * retries stay within the run's held bytes.
 *
 * Hot buffers: at most READ_HELD_BYTES_MAX of read buffers per connection are held at once,
 * counted from the start of a run's device read until the socket has handed its last reply to
 * the kernel (the buffer is back in the pool); further closed runs wait, in order, and start as
 * buffers come back (a run alone always starts: a READ larger than the limit still runs,
 * alone). The limit is per connection, so a client that stops reading holds up only its own
 * reads. Without the limit a sequential reader with
 * 64 × 256 KiB in flight on each of its connections has every request's buffer acquired at
 * once, tens of MiB that cycle through the caches: the device read then writes, and the socket
 * write reads, memory that is cold, and perf showed the page-cache → buffer copy costing us
 * three times what it costs nbdkit, whose few per-thread buffers stay in cache. A few MiB in
 * rotation through the LIFO pool stay in L2/L3, and two runs still overlap (one being read
 * while the previous one is sent). The limit only delays when a run's read starts; once the
 * connection drains (DISC, EOF, server close) it is lifted, so waiting runs never hold up a
 * shutdown behind a client that stopped reading.
 *
 * Every request still gets exactly one reply, and `done(request)` is called once per request
 * after its reply was handed to the socket (the connection's in-flight accounting).
 */
import { assert } from '@fss/core';
import { nbdErrnoOf } from './errors';
import type { NbdExport } from './export';
import type { PayloadPool } from './payload-pool';
import { Command } from './protocol';
import type { ReplyWriter } from './reply-writer';
import type { NbdRequest } from './request';

/** Largest merged read. */
const MERGED_BYTES_MAX = 512 * 1024;
/** Most requests in one merged read. */
const MERGED_COUNT_MAX = 64;
/** Read-buffer bytes one connection holds at once (see "Hot buffers" above). */
const READ_HELD_BYTES_MAX = 2 * 1024 * 1024;

interface Run {
  readonly offset: number;
  end: number;
  readonly requests: NbdRequest[];
}

export class ReadMerger {
  private open: Run | undefined;
  private flushScheduled = false;
  /** Closed runs waiting for held bytes to come back, oldest first. */
  private readonly waiting: Run[] = [];
  /** Bytes of read buffers acquired and not yet back in the pool. */
  private heldBytes = 0;
  /** Set once the connection drains: runs start at once. */
  private unlimited = false;

  constructor(
    private readonly target: NbdExport,
    private readonly writer: ReplyWriter,
    private readonly pool: PayloadPool,
    private readonly done: (request: NbdRequest) => void,
  ) {}

  /** Takes a validated READ of at least one byte; its reply follows once its run is read. */
  add(request: NbdRequest): void {
    assert(request.type === Command.READ, 'only READs are merged');
    assert(request.length > 0 && request.offset >= 0, 'a merged READ has a range');
    const run = this.open;
    const fits =
      run !== undefined &&
      request.offset === run.end &&
      run.end - run.offset + request.length <= MERGED_BYTES_MAX &&
      run.requests.length < MERGED_COUNT_MAX;
    if (fits) {
      run.requests.push(request);
      run.end += request.length;
      return;
    }
    this.close();
    this.open = { offset: request.offset, end: request.offset + request.length, requests: [request] };
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.startRuns(true);
      });
    }
  }

  /** Lifts the held-bytes limit for good (the connection is draining) and starts every run. */
  unlimit(): void {
    this.unlimited = true;
    this.startRuns(true);
  }

  /** Closes the open run, if any: it waits for its turn behind the runs closed before it. */
  private close(): void {
    const run = this.open;
    this.open = undefined;
    if (run === undefined) return;
    this.waiting.push(run);
    this.startRuns(false);
  }

  /**
   * Starts closed runs, oldest first, and then (with `andOpen`) the open one, while they fit
   * the held-bytes limit (a run alone always fits). An open run that does not fit stays open
   * and keeps taking the requests that continue it until it can start.
   */
  private startRuns(andOpen: boolean): void {
    for (;;) {
      const fromOpen = this.waiting.length === 0;
      const run = fromOpen ? (andOpen ? this.open : undefined) : this.waiting[0];
      if (run === undefined) return;
      const length = run.end - run.offset;
      if (!this.unlimited && this.heldBytes > 0 && this.heldBytes + length > READ_HELD_BYTES_MAX) return;
      if (fromOpen) this.open = undefined;
      else this.waiting.shift();
      this.heldBytes += length;
      void this.read(run);
    }
  }

  /** A run's buffer is back in the pool (or was never kept): its bytes count no more. */
  private unhold(length: number): void {
    this.heldBytes -= length;
    assert(this.heldBytes >= 0, 'held bytes stay non-negative');
    this.startRuns(true);
  }

  /** Reads a run and replies to each of its requests. Never rejects. */
  private async read(run: Run): Promise<void> {
    const length = run.end - run.offset;
    if (run.requests.length === 1) {
      await this.readOne(run.requests[0]!);
      return;
    }
    const buffer = this.pool.acquire(length);
    let bytesRead = -1;
    try {
      bytesRead = await this.target.device.read(buffer, run.offset);
    } catch {
      bytesRead = -1;
    }
    if (bytesRead !== length) {
      // Let each request find (and report) its own error. The run's held bytes stay counted:
      // each single read gives back its own length (they add up to the run's).
      this.pool.release(buffer);
      await Promise.all(run.requests.map((request) => this.readOne(request)));
      return;
    }
    this.reply(run, buffer);
  }

  /**
   * A run of one request, or one request of a failed run: read into a pooled buffer and reply
   * with it (the header goes out corked beside it, so the data keeps the buffer's page
   * alignment; see PayloadPool), or with the error of the read. Gives back its own length of
   * held bytes once the buffer is back in the pool.
   */
  private async readOne(request: NbdRequest): Promise<void> {
    const { length, offset } = request;
    const buffer = this.pool.acquire(length);
    const released = (): void => {
      this.pool.release(buffer);
      this.unhold(length);
    };
    let failure: unknown;
    try {
      const bytesRead = await this.target.device.read(buffer, offset);
      if (bytesRead !== length) failure = new Error(`short read: ${bytesRead} of ${length} bytes`);
    } catch (error) {
      failure = error;
    }
    if (failure !== undefined) {
      released();
      this.writer.send(request.cookie, nbdErrnoOf(failure));
    } else {
      this.writer.sendReadRun([request], offset, buffer, released);
    }
    this.done(request);
  }

  /** One reply per request, each with its slice; the buffer returns after the last is sent. */
  private reply(run: Run, buffer: Uint8Array): void {
    this.writer.sendReadRun(run.requests, run.offset, buffer, () => {
      this.pool.release(buffer);
      this.unhold(buffer.length);
    });
    for (const request of run.requests) this.done(request);
  }
}
