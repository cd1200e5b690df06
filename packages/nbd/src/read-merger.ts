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
 * is also closed when it reaches MERGED_BYTES_MAX or MERGED_COUNT_MAX, and at the latest in the
 * next check phase of the event loop (setImmediate), i.e. once every request that arrived in
 * this I/O round has been parsed: waiting never costs more than one loop turn. A closed run is
 * read into one pooled buffer, and each request gets its own reply with its slice of it (all
 * corked into one writev); the buffer returns to the pool when the last reply has been sent.
 * If the merged read fails, each request is retried on its own, so every reply carries the
 * error of its own range, exactly as without merging.
 *
 * Every request still gets exactly one reply, and `done(request)` is called once per request
 * after its reply was handed to the socket (the connection's in-flight accounting).
 */
import { assert } from '@fss/core';
import type { BufferPool } from './buffer-pool';
import { execute } from './commands';
import type { NbdExport } from './export';
import { Command } from './protocol';
import type { ReplyWriter } from './reply-writer';
import type { NbdRequest } from './request';

/** Largest merged read. */
const MERGED_BYTES_MAX = 2 * 1024 * 1024;
/** Most requests in one merged read. */
const MERGED_COUNT_MAX = 64;

interface Run {
  readonly offset: number;
  end: number;
  readonly requests: NbdRequest[];
}

export class ReadMerger {
  private open: Run | undefined;
  private flushScheduled = false;

  constructor(
    private readonly target: NbdExport,
    private readonly writer: ReplyWriter,
    private readonly pool: BufferPool,
    private readonly done: (request: NbdRequest) => void,
  ) {}

  /** Takes a validated READ of at least one byte; its reply follows within one loop turn. */
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
    this.flush();
    this.open = { offset: request.offset, end: request.offset + request.length, requests: [request] };
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
  }

  /** Closes the open run, if any, and starts its read. */
  flush(): void {
    const run = this.open;
    this.open = undefined;
    if (run !== undefined) void this.read(run);
  }

  /** Reads a run and replies to each of its requests. Never rejects. */
  private async read(run: Run): Promise<void> {
    if (run.requests.length === 1) {
      const request = run.requests[0]!;
      await execute(request, undefined, this.target, this.writer, this.pool);
      this.done(request);
      return;
    }
    const length = run.end - run.offset;
    const buffer = this.pool.acquire(length);
    let bytesRead = -1;
    try {
      bytesRead = await this.target.device.read(buffer, run.offset);
    } catch {
      bytesRead = -1;
    }
    if (bytesRead !== length) {
      // Let each request find (and report) its own error.
      this.pool.release(buffer);
      await Promise.all(
        run.requests.map(async (request) => {
          await execute(request, undefined, this.target, this.writer, this.pool);
          this.done(request);
        }),
      );
      return;
    }
    this.reply(run, buffer);
  }

  /** One reply per request, each with its slice; the buffer returns after the last is sent. */
  private reply(run: Run, buffer: Uint8Array): void {
    let unsent = run.requests.length;
    const sent = (): void => {
      unsent--;
      assert(unsent >= 0, 'each slice is sent once');
      if (unsent === 0) this.pool.release(buffer);
    };
    this.writer.corked(() => {
      for (const request of run.requests) {
        const at = request.offset - run.offset;
        this.writer.sendReadSplit(
          request.cookie,
          request.offset,
          buffer.subarray(at, at + request.length),
          sent,
        );
      }
    });
    for (const request of run.requests) this.done(request);
  }
}
