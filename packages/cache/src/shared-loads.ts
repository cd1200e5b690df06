/**
 * SharedLoads: the origin reads in flight for one origin's snapshots, so that a snapshot
 * that needs bytes another snapshot is reading right now copies them from that read instead
 * of reading the origin again (four fresh snapshots and one origin write: one origin read,
 * four slots filled).
 *
 * When that is correct is the caller's rule, not this module's: it is correct for the
 * copy-on-write loads of one origin's snapshots (engine/src/snapshot.ts says why: while a
 * load for a cluster is in flight, no origin write to that cluster can land). SharedLoads
 * only keeps the bookkeeping: a leader's read registered by byte range, and followers whose
 * ranges lie inside it.
 *
 * A follower's bytes are copied synchronously in the leader's continuation, right after its
 * read completes and before the leader's own caller runs, so the leader's memory cannot have
 * been reused yet. If the leader's read fails, each follower reads for itself (and may become
 * a leader), so a follower gets the outcome of its own read, never another snapshot's error.
 */
import { assert } from '@fss/core';

interface Follower {
  readonly target: Uint8Array;
  readonly offset: number;
  /** true: the bytes were copied in; false: the leader failed, read them yourself. */
  readonly settle: (copied: boolean) => void;
}

interface Load {
  readonly offset: number;
  readonly target: Uint8Array;
  readonly followers: Follower[];
}

export class SharedLoads {
  private readonly inFlight = new Set<Load>();
  /** Reads copied from another one's read, since creation (tests and debugging). */
  sharedCount = 0;

  /**
   * Fills `target` with the bytes from `offset`: copied from a registered read in flight that
   * covers them, else by `read()` (which must fill all of `target`), registered meanwhile.
   */
  async read(target: Uint8Array, offset: number, read: () => Promise<void>): Promise<void> {
    assert(Number.isSafeInteger(offset) && offset >= 0, 'offset must be a byte offset');
    assert(target.length > 0, 'a load reads bytes');
    const leader = this.covering(offset, target.length);
    if (leader !== undefined) {
      const copied = await new Promise<boolean>((settle) =>
        leader.followers.push({ target, offset, settle }),
      );
      if (copied) {
        this.sharedCount += 1;
        return;
      }
      return this.read(target, offset, read); // the leader failed: our own read
    }
    const load: Load = { offset, target, followers: [] };
    this.inFlight.add(load);
    try {
      await read();
    } catch (error) {
      this.inFlight.delete(load);
      for (const follower of load.followers) follower.settle(false);
      throw error;
    }
    this.inFlight.delete(load);
    for (const follower of load.followers) {
      const at = follower.offset - offset;
      follower.target.set(target.subarray(at, at + follower.target.length));
      follower.settle(true);
    }
  }

  /** A read in flight whose range holds [offset, offset + length). */
  private covering(offset: number, length: number): Load | undefined {
    for (const load of this.inFlight) {
      if (load.offset <= offset && offset + length <= load.offset + load.target.length) return load;
    }
    return undefined;
  }
}

const byOrigin = new WeakMap<object, SharedLoads>();

/** The SharedLoads of an origin, by its identity (the origin's device object). */
export function sharedLoadsOf(origin: object): SharedLoads {
  let shared = byOrigin.get(origin);
  if (shared === undefined) {
    shared = new SharedLoads();
    byOrigin.set(origin, shared);
  }
  return shared;
}
