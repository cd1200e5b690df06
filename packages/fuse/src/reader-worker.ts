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
 * Requests about names and attributes (GETATTR, LOOKUP, STATFS; STATX and the xattr
 * requests, which we do not support; FORGET) are answered by the reader itself, from replies
 * the session encoded once: the answers never change. That keeps a synchronous stat(2) of
 * the file from the serving process's main thread from deadlocking it. The kernel invalidates
 * the file's cached size and times after every write, so such a stat reaches us; had it
 * waited for the main thread, which is the one blocked in the stat, neither could ever go on,
 * and since the reader had already taken the request, not even SIGKILL would end the wait
 * (only an abort through fusectl). blockdev-linux's claim check stats every loop device's
 * backing file synchronously, which is exactly that call.
 *
 * Slots live in one SharedArrayBuffer shared with the main thread, which reads the request
 * where the reader put it, answers, and marks the slot FREE again; a reader only ever writes
 * its own slots. Try-read-first means a busy reader makes one syscall per request; poll only
 * runs when the queue is empty.
 */

/** Slot states, in the shared control words. */
export const SlotState = { FREE: 0, READING: 1, HANDED: 2 } as const;

/**
 * Control word layout: the stop flag, the count of requests the readers answered themselves,
 * one wake counter per reader, then the slot states.
 */
export const CONTROL_STOP = 0;
export const CONTROL_ANSWERED = 1;
export const CONTROL_WAKE_BASE = 2;
export const CONTROL_READERS_MAX = 15;
export const CONTROL_SLOT_BASE = CONTROL_WAKE_BASE + CONTROL_READERS_MAX;

/**
 * Replies the reader sends itself, encoded once by the session (session.ts `readerReplies`):
 * whole replies whose `unique` (bytes 8..16) the reader overwrites with the request's.
 */
export interface ReaderReplies {
  getattrRoot: Uint8Array;
  getattrFile: Uint8Array;
  /** LOOKUP of `lookupName` in the root. */
  lookupFile: Uint8Array;
  /** The file's name as LOOKUP carries it: UTF-8, then NUL. */
  lookupName: Uint8Array;
  statfs: Uint8Array;
  enoent: Uint8Array;
  enosys: Uint8Array;
}

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
  writePrototype: string;
  replies: ReaderReplies;
}

export const READER_SOURCE = `
const { parentPort, workerData: d } = require('node:worker_threads');
const koffi = require(d.koffiPath);
const libc = koffi.load('libc.so.6');
const poll = libc.func(d.pollPrototype);
const read = libc.func(d.readPrototype);
const write = libc.func(d.writePrototype);
const replies = d.replies;
const out = new Uint8Array(4096);
const OPCODE = { LOOKUP: 1, FORGET: 2, GETATTR: 3, STATFS: 17, GETXATTR: 22, LISTXATTR: 23, BATCH_FORGET: 42, STATX: 52 };
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

/** The fixed reply to the request in views[mine], null when the main thread must answer it. */
function replyOf(mine, length) {
  const bytes = views[mine];
  const view = new DataView(bytes.buffer, bytes.byteOffset, length);
  const opcode = view.getUint32(4, true);
  const node = view.getUint32(20, true) === 0 ? view.getUint32(16, true) : -1;
  switch (opcode) {
    case OPCODE.GETATTR:
      return node === 1 ? replies.getattrRoot : node === 2 ? replies.getattrFile : replies.enoent;
    case OPCODE.LOOKUP: {
      const name = replies.lookupName;
      let same = node === 1 && length === 40 + name.length;
      for (let i = 0; same && i < name.length; i++) same = bytes[40 + i] === name[i];
      return same ? replies.lookupFile : replies.enoent;
    }
    case OPCODE.STATFS:
      return replies.statfs;
    case OPCODE.STATX:
    case OPCODE.GETXATTR:
    case OPCODE.LISTXATTR:
      return replies.enosys;
    case OPCODE.FORGET:
    case OPCODE.BATCH_FORGET:
      return out.subarray(0, 0); // no reply, by the protocol
    default:
      return null;
  }
}

/** Answers the request here when it is one of ours to answer; true when it did. */
function answered(mine, length) {
  const reply = replyOf(mine, length);
  if (reply === null) return false;
  if (reply.length > 0) {
    out.set(reply, 0);
    out.set(views[mine].subarray(8, 16), 8); // the request's unique
    write(d.fuseFd, out, reply.length); // ENOENT (interrupted meanwhile) needs nothing more
  }
  Atomics.add(control, ${CONTROL_ANSWERED}, 1);
  return true;
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
  if (answered(mine, length)) {
    Atomics.store(control, ${CONTROL_SLOT_BASE} + slot, ${SlotState.FREE});
    continue;
  }
  lengths[slot] = length;
  Atomics.store(control, ${CONTROL_SLOT_BASE} + slot, ${SlotState.HANDED});
  parentPort.postMessage(slot);
}
`;
