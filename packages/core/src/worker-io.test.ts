/**
 * Goal: the worker I/O gate's promise holds under real concurrency: once `revoke` resolves,
 * no worker is between enter and leave, and none of the revoked kind enters until the permit
 * comes back; widening takes effect at once; completed requests are counted.
 *
 * Method: worker threads run the very protocol source the FUSE readers run
 * (WORKER_IO_ENTER_SOURCE) in a tight loop, marking a shared "inside" counter between enter
 * and leave (and spinning a little there, like a pread); the main thread revokes and grants
 * at seeded random moments and checks the counter right after each revoke.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from './random';
import { WORKER_IO_ENTER_SOURCE, WorkerIoGate, WorkerIoPermit, WorkerIoWord } from './worker-io';

const INSIDE_READ = 0;
const INSIDE_WRITE = 1;
const STOP = 2;

const LOOP_SOURCE = `
const { workerData: d } = require('node:worker_threads');
${WORKER_IO_ENTER_SOURCE}
const flags = d.flags;
let turn = d.index;
while (Atomics.load(flags, ${STOP}) === 0) {
  const write = (turn++ & 1) === 1;
  const bit = write ? ${WorkerIoPermit.WRITE} : ${WorkerIoPermit.READ};
  if (!workerIoEnter(d.words, bit)) continue;
  const inside = write ? ${INSIDE_WRITE} : ${INSIDE_READ};
  Atomics.add(flags, inside, 1);
  for (let spin = 0; spin < 200; spin++) Atomics.load(flags, ${STOP});
  Atomics.sub(flags, inside, 1);
  workerIoLeave(d.words, bit, true);
}
`;

describe('WorkerIoGate', () => {
  it('starts with its permits, validates them, and a revoke with nothing in flight resolves', async () => {
    const gate = new WorkerIoGate(WorkerIoPermit.READ | WorkerIoPermit.WRITE);
    expect(gate.permits).toBe(3);
    await gate.revoke(WorkerIoPermit.WRITE);
    expect(gate.permits).toBe(WorkerIoPermit.READ);
    expect(() => gate.permit(8)).toThrow(/unknown permit bits 8/);
    expect(gate.workerIo({ fd: 7, offsetAlignment: 512, memoryAlignment: 512, size: 4096 }).words).toBe(
      gate.words,
    );
    expect(() => gate.workerIo({ fd: -1, offsetAlignment: 1, memoryAlignment: 1, size: 0 })).toThrow();
  });

  it('revoke waits for a request in flight and resolves when it leaves', async () => {
    const gate = new WorkerIoGate(WorkerIoPermit.READ | WorkerIoPermit.WRITE);
    Atomics.add(gate.words, WorkerIoWord.WRITES_IN_FLIGHT, 1); // a worker inside
    let revoked = false;
    const revoking = gate.revoke(WorkerIoPermit.WRITE).then(() => {
      revoked = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(revoked).toBe(false);
    expect(gate.permits).toBe(WorkerIoPermit.READ); // no new write can enter meanwhile
    Atomics.sub(gate.words, WorkerIoWord.WRITES_IN_FLIGHT, 1);
    Atomics.notify(gate.words, WorkerIoWord.WRITES_IN_FLIGHT);
    await revoking;
    expect(revoked).toBe(true);
  });

  it('revoking writes does not wait for reads in flight', async () => {
    const gate = new WorkerIoGate(WorkerIoPermit.READ | WorkerIoPermit.WRITE);
    Atomics.add(gate.words, WorkerIoWord.READS_IN_FLIGHT, 1); // a read that never ends
    await gate.revoke(WorkerIoPermit.WRITE);
    expect(gate.permits).toBe(WorkerIoPermit.READ);
    expect(gate.inFlight).toBe(1);
  });

  it('under 3 racing worker threads: after every revoke nobody of the revoked kind is inside, none gets in', async () => {
    const gate = new WorkerIoGate(WorkerIoPermit.READ | WorkerIoPermit.WRITE);
    const flags = new Int32Array(new SharedArrayBuffer(4 * 3));
    const workers = [0, 1, 2].map(
      (index) => new Worker(LOOP_SOURCE, { eval: true, workerData: { words: gate.words, flags, index } }),
    );
    const random = new SeededRandom(42);
    try {
      await new Promise((resolve) => setTimeout(resolve, 20)); // let them start
      for (let round = 0; round < 300; round++) {
        const bits = random.integer(1, 3); // READ, WRITE or both
        await gate.revoke(bits);
        if (bits & WorkerIoPermit.WRITE) expect(Atomics.load(flags, INSIDE_WRITE)).toBe(0);
        if (bits & WorkerIoPermit.READ) expect(Atomics.load(flags, INSIDE_READ)).toBe(0);
        // Nobody of a revoked kind gets in while it stays revoked.
        for (let spin = 0; spin < 1000; spin++) {
          if (bits & WorkerIoPermit.WRITE) expect(Atomics.load(flags, INSIDE_WRITE)).toBe(0);
        }
        gate.permit(WorkerIoPermit.READ | WorkerIoPermit.WRITE);
        if (random.integer(0, 1) === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      const done = gate.completed;
      expect(done.reads).toBeGreaterThan(0);
      expect(done.writes).toBeGreaterThan(0);
    } finally {
      Atomics.store(flags, STOP, 1); // each leaves its request and exits
      await Promise.all(workers.map((worker) => new Promise((resolve) => worker.once('exit', resolve))));
    }
    expect(gate.inFlight).toBe(0);
  });
});
