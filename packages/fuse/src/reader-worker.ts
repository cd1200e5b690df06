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
 * Serving I/O. When the device offers its descriptor (BlockDevice.workerIo: an origin, whose
 * reads always go straight to the device and whose writes do while no snapshot is active),
 * the reader serves READ and WRITE of the file itself: pread/pwrite of the request's range
 * into or out of the slot, then the reply, without the main thread. Only what the device's
 * gate permits at that moment (@fss/core worker-io.ts: the engine withdraws writes at a
 * snapshot moment and while snapshots are active) and only whole aligned ranges inside the
 * device; everything else, and any request whose pread/pwrite fails or comes up short, goes
 * to the main thread as before, which does it again through the device and answers with the
 * device's errno. A blocking pread/pwrite holds this reader meanwhile, so an attached origin
 * gets several readers (serve.ts), each with its own cloned descriptor.
 *
 * Slots live in one SharedArrayBuffer shared with the main thread, which reads the request
 * where the reader put it, answers, and marks the slot FREE again; a reader only ever writes
 * its own slots. Try-read-first means a busy reader makes one syscall per request; poll only
 * runs when the queue is empty.
 */

import { WORKER_IO_ENTER_SOURCE, WorkerIoPermit } from '@fss/core';

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

/** The device's descriptor for the readers' own READ and WRITE (see "Serving I/O" above). */
export interface ReaderIo {
  fd: number;
  offsetAlignment: number;
  size: number;
  /** The gate's shared words (@fss/core WorkerIoWord), an Int32Array over a SharedArrayBuffer. */
  words: Int32Array;
  /** WRITE may be served here at all (the session is not read-only). */
  writable: boolean;
  preadPrototype: string;
  pwritePrototype: string;
}

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
  /** Present when the readers serve READ and WRITE of the file themselves. */
  io: ReaderIo | undefined;
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
const dataViews = d.slotOffsets.map((offset) => new DataView(d.data, offset, d.slotBytes));
const outView = new DataView(out.buffer);
const io = d.io;
const pread = io === undefined ? undefined : libc.func(io.preadPrototype);
const pwrite = io === undefined ? undefined : libc.func(io.pwritePrototype);
const READ = 15, WRITE = 16, FILE_NODE = 2, PAYLOAD = 80, OUT_HEADER = 16;
${WORKER_IO_ENTER_SOURCE}

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

/** pread/pwrite all of buffer at offset; false on an error or a short transfer (the owner redoes it). */
function transfer(call, buffer, offset) {
  let done = 0;
  while (done < buffer.length) {
    const moved = Number(call(io.fd, done === 0 ? buffer : buffer.subarray(done), buffer.length - done, offset + done));
    if (moved <= 0) return false;
    done += moved;
  }
  return true;
}

/** Serves a READ or WRITE of the file on this thread when it may; true when it did. */
function servedHere(mine, length) {
  if (io === undefined) return false;
  const view = dataViews[mine];
  const opcode = view.getUint32(4, true);
  if (opcode !== READ && !(opcode === WRITE && io.writable)) return false;
  if (view.getUint32(16, true) !== FILE_NODE || view.getUint32(20, true) !== 0) return false;
  const offset = view.getUint32(52, true) * 4294967296 + view.getUint32(48, true);
  const size = view.getUint32(56, true);
  // The main thread answers the edge cases: empty, unaligned, crossing or past the end.
  if (size === 0 || size % io.offsetAlignment !== 0 || offset % io.offsetAlignment !== 0) return false;
  if (offset + size > io.size || PAYLOAD + size > d.slotBytes) return false;
  const bytes = views[mine];
  const payload = bytes.subarray(PAYLOAD, PAYLOAD + size);
  if (opcode === WRITE) {
    if (length !== PAYLOAD + size) return false;
    if (!workerIoEnter(io.words, ${WorkerIoPermit.WRITE})) return false;
    const done = transfer(pwrite, payload, offset);
    workerIoLeave(io.words, ${WorkerIoPermit.WRITE}, done);
    if (!done) return false;
    outView.setUint32(0, OUT_HEADER + 8, true);
    outView.setInt32(4, 0, true);
    out.set(bytes.subarray(8, 16), 8); // the request's unique
    outView.setUint32(16, size, true); // fuse_write_out.size
    outView.setUint32(20, 0, true);
    write(d.fuseFd, out, OUT_HEADER + 8); // ENOENT (interrupted meanwhile) needs nothing more
    return true;
  }
  if (!workerIoEnter(io.words, ${WorkerIoPermit.READ})) return false;
  const done = transfer(pread, payload, offset);
  workerIoLeave(io.words, ${WorkerIoPermit.READ}, done);
  if (!done) return false;
  // The reply header goes in the 16 bytes before the data (read_in, no longer needed).
  const at = PAYLOAD - OUT_HEADER;
  view.setUint32(at, OUT_HEADER + size, true);
  view.setInt32(at + 4, 0, true);
  bytes.copyWithin(at + 8, 8, 16); // the request's unique
  write(d.fuseFd, bytes.subarray(at), OUT_HEADER + size);
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
  if (answered(mine, length) || servedHere(mine, length)) {
    Atomics.store(control, ${CONTROL_SLOT_BASE} + slot, ${SlotState.FREE});
    continue;
  }
  lengths[slot] = length;
  Atomics.store(control, ${CONTROL_SLOT_BASE} + slot, ${SlotState.HANDED});
  parentPort.postMessage(slot);
}
`;
