/**
 * Goal: the origin lets other threads write its descriptor only while no snapshot needs a
 * copy (copy-on-write.ts, "Worker writes"): reads and writes are permitted with no snapshot;
 * taking a snapshot revokes writes and waits for the worker writes in flight before the
 * snapshot moment; the permit comes back when the last active snapshot is closed or becomes
 * invalid; nothing is permitted once the origin's writes stop; a read-only origin never
 * permits writes; an origin whose device offers no descriptor offers none either.
 *
 * Method: a memory device that offers a WorkerIo (the descriptor number is never used here:
 * the test plays the worker by moving the gate's words itself, as reader-worker.ts does).
 */
import {
  MemoryBackingStore,
  MemoryBlockDevice,
  type WorkerIo,
  WorkerIoGate,
  WorkerIoPermit,
  WorkerIoWord,
} from '@fss/core';
import { describe, expect, it } from 'vitest';
import { Origin } from '../src/index';

const BOTH = WorkerIoPermit.READ | WorkerIoPermit.WRITE;

class DescriptorDevice extends MemoryBlockDevice {
  private readonly gate = new WorkerIoGate(BOTH);
  workerIo(): WorkerIo {
    return this.gate.workerIo({ fd: 0, offsetAlignment: 512, memoryAlignment: 512, size: this.size });
  }
}

function permitsOf(origin: Origin): number {
  const io = origin.workerIo();
  return io === undefined ? -1 : Atomics.load(io.words, WorkerIoWord.PERMITS);
}

describe('Origin.workerIo: worker writes only while no snapshot is active', () => {
  it('permits both with no snapshot, reads only while one is active, both again after it closes', async () => {
    const origin = new Origin(new DescriptorDevice(1024 * 1024), { logger: () => undefined });
    const io = origin.workerIo()!;
    expect(io.fd).toBe(0);
    expect(io.offsetAlignment).toBe(512);
    expect(permitsOf(origin)).toBe(BOTH);
    const snapshot = await origin.createSnapshot(new MemoryBackingStore());
    expect(permitsOf(origin)).toBe(WorkerIoPermit.READ);
    const second = await origin.createSnapshot(new MemoryBackingStore());
    await snapshot.close();
    expect(permitsOf(origin)).toBe(WorkerIoPermit.READ); // one is still active
    second.invalidate('test');
    expect(permitsOf(origin)).toBe(BOTH);
    await second.close();
    await origin.stopWrites();
    expect(origin.workerIo()).toBeUndefined();
    expect(Atomics.load(io.words, WorkerIoWord.PERMITS)).toBe(0);
    await origin.close();
  });

  it('the snapshot moment waits for a worker write in flight, and none enters meanwhile', async () => {
    const origin = new Origin(new DescriptorDevice(1024 * 1024), { logger: () => undefined });
    const { words } = origin.workerIo()!;
    Atomics.add(words, WorkerIoWord.WRITES_IN_FLIGHT, 1); // a reader thread inside its pwrite
    let taken = false;
    const creating = origin.createSnapshot(new MemoryBackingStore()).then((snapshot) => {
      taken = true;
      return snapshot;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(taken).toBe(false);
    expect(Atomics.load(words, WorkerIoWord.PERMITS) & WorkerIoPermit.WRITE).toBe(0);
    // The worker's write lands; it leaves the gate and notifies.
    Atomics.sub(words, WorkerIoWord.WRITES_IN_FLIGHT, 1);
    Atomics.notify(words, WorkerIoWord.WRITES_IN_FLIGHT);
    const snapshot = await creating;
    expect(snapshot.state).toBe('active');
    expect(Atomics.load(words, WorkerIoWord.PERMITS)).toBe(WorkerIoPermit.READ);
    await snapshot.close();
    await origin.close();
  });

  it('a read-only origin never permits writes; a device without a descriptor offers none', async () => {
    const readOnly = new Origin(new DescriptorDevice(64 * 1024, { readOnly: true }));
    expect(permitsOf(readOnly)).toBe(WorkerIoPermit.READ);
    const plain = new Origin(new MemoryBlockDevice(64 * 1024));
    expect(plain.workerIo()).toBeUndefined();
    await readOnly.close();
    await plain.close();
  });
});
