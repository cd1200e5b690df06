/**
 * The reader thread's program, as source text (plain CommonJS, evaluated with `eval: true`:
 * no file to locate next to the built output, and it runs the same from sources and dist).
 *
 * read(2) and poll(2) are koffi calls, not `fs.readSync`: an empty non-blocking read would
 * otherwise throw an Error per request, and building its stack trace (mapped through source
 * maps under tsx) cost more CPU than everything else a request does.
 *
 * Why threads at all. A read of /dev/fuse blocks until the kernel has a request. Node has no
 * way to wait for readability of an arbitrary descriptor on its event loop, and a blocking
 * `fs.read` would hold one of libuv's four pool threads, the same threads every disk read and
 * write of the device needs. So each reader is a worker thread of its own that does nothing
 * but read requests and hand them over.
 *
 * The loop, per reader:
 *
 *   take a FREE slot of its own (CAS FREE → READING); none free: Atomics.wait for a release
 *   read(fuse fd, slot)            non-blocking descriptor:
 *     a message                    store its length, mark the slot HANDED, post the slot
 *                                  index to the main thread (a number: nothing to copy)
 *     EAGAIN                       poll(fuse fd, stop eventfd) until one is readable
 *     ENOENT, EINTR                the request went away before we read it: read again
 *     ENODEV, ECONNABORTED         the connection is over (unmounted or aborted): exit
 *   stop eventfd readable          exit (close() asked; nothing else can wake a blocked read)
 *
 * Slots live in one SharedArrayBuffer shared with the main thread, which reads the request
 * where the reader put it, answers, and marks the slot FREE again; a reader only ever writes
 * its own slots. Try-read-first means a busy reader makes one syscall per request; poll only
 * runs when the queue is empty.
 */

/** Slot states, in the shared control words. */
export const SlotState = { FREE: 0, READING: 1, HANDED: 2 } as const;

/** Control word layout: the stop flag, one wake counter per reader, then the slot states. */
export const CONTROL_STOP = 0;
export const CONTROL_WAKE_BASE = 1;
export const CONTROL_READERS_MAX = 15;
export const CONTROL_SLOT_BASE = CONTROL_WAKE_BASE + CONTROL_READERS_MAX;

/** What a reader posts to the main thread. */
export type ReaderMessage =
  | number // a slot index: a request is waiting in it
  | { type: 'ended'; code: string } // the connection is over
  | { type: 'error'; code: string; message: string };

/** workerData of one reader. */
export interface ReaderData {
  koffiPath: string;
  pollPrototype: string;
  readPrototype: string;
  fuseFd: number;
  stopFd: number;
  readerIndex: number;
  /** Shared: the slots' memory. */
  data: SharedArrayBuffer;
  /** Shared Int32 control words (layout above) and the message length per slot. */
  control: SharedArrayBuffer;
  lengths: SharedArrayBuffer;
  /** This reader's slots: their indices and byte offsets in `data`. */
  slots: number[];
  slotOffsets: number[];
  slotBytes: number;
}

export const READER_SOURCE = `
const { parentPort, workerData: d } = require('node:worker_threads');
const koffi = require(d.koffiPath);
const libc = koffi.load('libc.so.6');
const poll = libc.func(d.pollPrototype);
const read = libc.func(d.readPrototype);
const ERRNO = { EINTR: 4, EAGAIN: 11, ENOENT: 2, ENODEV: 19, ECONNABORTED: 103 };
const control = new Int32Array(d.control);
const lengths = new Int32Array(d.lengths);
const views = d.slotOffsets.map((offset) => new Uint8Array(d.data, offset, d.slotBytes));
const wake = ${CONTROL_WAKE_BASE} + d.readerIndex;
const POLLIN = 1;
const pollfds = new Int32Array(4);
const pollEvents = new Int16Array(pollfds.buffer);
pollfds[0] = d.fuseFd; pollEvents[2] = POLLIN;
pollfds[2] = d.stopFd; pollEvents[6] = POLLIN;
let next = 0;

function stopping() { return Atomics.load(control, ${CONTROL_STOP}) !== 0; }

/** A free slot of ours (index into d.slots), or -1 once stopping. */
function takeSlot() {
  for (;;) {
    if (stopping()) return -1;
    const seen = Atomics.load(control, wake);
    for (let tried = 0; tried < d.slots.length; tried++) {
      const mine = (next + tried) % d.slots.length;
      const state = ${CONTROL_SLOT_BASE} + d.slots[mine];
      if (Atomics.compareExchange(control, state, ${SlotState.FREE}, ${SlotState.READING}) === ${SlotState.FREE}) {
        next = (mine + 1) % d.slots.length;
        return mine;
      }
    }
    Atomics.wait(control, wake, seen, 1000);
  }
}

/** Reads one message into views[mine]; its length, or -1 when the reader must stop. */
function readMessage(mine) {
  for (;;) {
    const length = read(d.fuseFd, views[mine], d.slotBytes);
    if (length >= 0) return Number(length);
    const errno = koffi.errno();
    if (errno === ERRNO.EAGAIN) {
      pollEvents[3] = 0; pollEvents[7] = 0;
      poll(pollfds, 2, -1);
      if (pollEvents[7] !== 0 || stopping()) return -1;
      continue;
    }
    if (errno === ERRNO.ENOENT || errno === ERRNO.EINTR) continue;
    if (errno === ERRNO.ENODEV || errno === ERRNO.ECONNABORTED) {
      parentPort.postMessage({ type: 'ended', code: errno === ERRNO.ENODEV ? 'ENODEV' : 'ECONNABORTED' });
      return -1;
    }
    parentPort.postMessage({ type: 'error', code: 'errno ' + errno, message: 'read(/dev/fuse) failed' });
    return -1;
  }
}

for (;;) {
  const mine = takeSlot();
  if (mine < 0) break;
  const length = readMessage(mine);
  const slot = d.slots[mine];
  if (length < 0) {
    Atomics.store(control, ${CONTROL_SLOT_BASE} + slot, ${SlotState.FREE});
    break;
  }
  lengths[slot] = length;
  Atomics.store(control, ${CONTROL_SLOT_BASE} + slot, ${SlotState.HANDED});
  parentPort.postMessage(slot);
}
`;
