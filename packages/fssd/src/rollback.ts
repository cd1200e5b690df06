/**
 * Rollback (issue 13 item 4): makes the origin equal to a snapshot by writing every cluster
 * the snapshot saved back onto the origin, as LVM's merge does, but through the origin's
 * copy-on-write path, so every other unit of the origin preserves what it is overwritten
 * with and stays exact. The snapshot itself does not change: its saved clusters are copied
 * already (a write to them copies nothing), and the clusters it never saved were never
 * written since it was taken, so they equal the origin already.
 *
 * The origin is reserved for the job (Origin.reserveWrites): every other writer gets EBUSY
 * until it ends. Writing a saved cluster back is idempotent, so a job that stopped (fssd
 * crashed or stopped, an error) can start again from any earlier point: progress is the
 * next cluster to write, recorded with a persistent unit (state-dir.ts) after the writes
 * before it landed and the origin was flushed, every RECORD_BYTES or RECORD_MS.
 *
 * This module runs the copy; units.ts decides when one may start, records its progress and
 * unconfigures the unit once it is done.
 */
import type { RollbackStatus } from '@fss/control';
import { toWireError, unitName } from '@fss/control';
import { assert, FssError, toFssError } from '@fss/core';
import type { Origin, OriginWriter, Snapshot } from '@fss/engine';
import { extentsOf } from './changed-blocks';

/** Bytes read from the snapshot and written to the origin at a time. */
const CHUNK_BYTES = 1024 * 1024;
/** Progress is recorded at least this often (bytes written back)… */
const RECORD_BYTES = 16 * 1024 * 1024;
/** …and this often (ms), whichever comes first. */
const RECORD_MS = 1000;

export interface RollbackJobOptions {
  unit: number;
  snapshot: Snapshot;
  origin: Origin;
  /** The origin's reservation: the only writer while the job runs; released by the caller. */
  writer: OriginWriter;
  /** The first cluster not known to be written back already (0 for a new rollback). */
  fromCluster: number;
  /** Records that every cluster before `nextCluster` is on the origin (durably flushed). */
  recordProgress(nextCluster: number): Promise<void>;
  /** At most this many bytes a second (0: no limit), to spare a shared disk. */
  bytesPerSecond?: number;
  /** The clock, in ms (tests inject one). */
  now?: () => number;
}

export class RollbackJob {
  readonly unit: number;
  readonly totalBytes: number;
  private doneBytes: number;
  private state: RollbackStatus['state'] = 'running';
  private error: FssError | undefined;
  private cancelled = false;
  private readonly extents: { offset: number; length: number }[];
  private readonly options: RollbackJobOptions;

  constructor(options: RollbackJobOptions) {
    const { snapshot, fromCluster } = options;
    assert(Number.isSafeInteger(fromCluster) && fromCluster >= 0, 'a resume point is a cluster number');
    this.options = options;
    this.unit = options.unit;
    this.extents = extentsOf(snapshot.copiedWords(), snapshot.geometry);
    this.totalBytes = this.extents.reduce((sum, extent) => sum + extent.length, 0);
    const fromByte = fromCluster * snapshot.geometry.clusterSize;
    this.doneBytes = this.extents.reduce(
      (sum, extent) => sum + Math.max(0, Math.min(extent.offset + extent.length, fromByte) - extent.offset),
      0,
    );
  }

  get running(): boolean {
    return this.state === 'running';
  }

  status(): RollbackStatus {
    const status: RollbackStatus = {
      unit: unitName(this.unit),
      state: this.state,
      doneBytes: this.doneBytes,
      totalBytes: this.totalBytes,
    };
    if (this.error !== undefined) status.error = toWireError(this.error);
    return status;
  }

  /** Stops after the chunk in flight (fssd stops); the job fails with ECANCELED. */
  cancel(): void {
    this.cancelled = true;
  }

  /** Marks a job that wrote everything but could not finish (its unit not unconfigured). */
  fail(error: unknown): void {
    this.state = 'failed';
    this.error = toFssError(error);
  }

  /** Marks the job finished: the origin equals the snapshot and the unit is unconfigured. */
  finish(): void {
    assert(this.doneBytes === this.totalBytes, 'a finished rollback wrote every saved cluster');
    this.state = 'done';
  }

  /**
   * Writes every saved cluster from the resume point on back onto the origin, then flushes
   * it. Resolves true when all of it landed; false when it failed or was cancelled (the
   * status says why). The job stays `running` until the caller finishes or fails it.
   */
  async run(): Promise<boolean> {
    const { snapshot, origin, writer, fromCluster } = this.options;
    const now = this.options.now ?? Date.now;
    const { clusterSize } = snapshot.geometry;
    const chunkBytes = Math.max(clusterSize, Math.floor(CHUNK_BYTES / clusterSize) * clusterSize);
    const buffer = snapshot.allocateBuffer(chunkBytes);
    const fromByte = fromCluster * clusterSize;
    let unrecordedBytes = 0;
    let recordedAtMs = now();
    const startedAtMs = recordedAtMs;
    const startedBytes = this.doneBytes;
    const rate = this.options.bytesPerSecond ?? 0;
    try {
      for (const extent of this.extents) {
        const end = extent.offset + extent.length;
        for (let at = Math.max(extent.offset, fromByte); at < end; ) {
          if (this.cancelled) {
            throw new FssError('ECANCELED', 'interrupted by fssd stopping: it resumes at the next start');
          }
          const view = buffer.subarray(0, Math.min(chunkBytes, end - at));
          const read = await snapshot.read(view, at);
          if (read !== view.length) throw new FssError('EIO', `short read from ${snapshot.name} at ${at}`);
          await writer.write(view, at);
          at += view.length;
          this.doneBytes += view.length;
          unrecordedBytes += view.length;
          if (unrecordedBytes >= RECORD_BYTES || now() - recordedAtMs >= RECORD_MS) {
            await origin.flush();
            await this.options.recordProgress(Math.ceil(at / clusterSize));
            unrecordedBytes = 0;
            recordedAtMs = now();
          }
          if (rate > 0) {
            const aheadMs = ((this.doneBytes - startedBytes) * 1000) / rate - (now() - startedAtMs);
            if (aheadMs > 0) await new Promise((resolve) => setTimeout(resolve, aheadMs));
          }
        }
      }
      // Durable before the unit and its saved clusters are let go.
      await origin.flush();
      return true;
    } catch (error) {
      this.fail(error);
      return false;
    }
  }
}
