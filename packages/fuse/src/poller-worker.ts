/**
 * The poller thread's program (plain CommonJS evaluated with `eval: true`, like freeze.ts's
 * worker). It never reads requests: it only waits, with poll(2), until /dev/fuse has one
 * while the main thread is idle, and then wakes the main thread, which reads them itself.
 *
 *   main thread                         poller
 *   read(fuse fd) → EAGAIN
 *   arm: control[ARMED] = 1, notify ──▶ Atomics.wait until armed
 *                                       poll(fuse fd, stop eventfd)
 *                               ◀────── readable: control[ARMED] = 0, post 0
 *   read(fuse fd) until EAGAIN, arm
 *
 * Level-triggered poll makes the race harmless: a request that arrives between the main
 * thread's EAGAIN and the poll is seen by the poll at once.
 */

export const CONTROL_STOP = 0;
export const CONTROL_ARMED = 1;
export const CONTROL_WORDS = 2;

export interface PollerData {
  koffiPath: string;
  pollPrototype: string;
  fuseFd: number;
  stopFd: number;
  control: SharedArrayBuffer;
}

export const POLLER_SOURCE = `
const { parentPort, workerData: d } = require('node:worker_threads');
const koffi = require(d.koffiPath);
const poll = koffi.load('libc.so.6').func(d.pollPrototype);
const control = new Int32Array(d.control);
const POLLIN = 1;
const pollfds = new Int32Array(4);
const events = new Int16Array(pollfds.buffer);
pollfds[0] = d.fuseFd; events[2] = POLLIN;
pollfds[2] = d.stopFd; events[6] = POLLIN;
const stopping = () => Atomics.load(control, ${CONTROL_STOP}) !== 0;
for (;;) {
  while (!stopping() && Atomics.load(control, ${CONTROL_ARMED}) === 0) Atomics.wait(control, ${CONTROL_ARMED}, 0, 1000);
  if (stopping()) break;
  events[3] = 0; events[7] = 0;
  poll(pollfds, 2, -1);
  if (events[7] !== 0 || stopping()) break;
  Atomics.store(control, ${CONTROL_ARMED}, 0);
  parentPort.postMessage(0);
}
`;
