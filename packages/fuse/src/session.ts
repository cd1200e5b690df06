/**
 * FuseSession: answers the kernel's requests for a filesystem of one directory holding one
 * regular file, whose bytes are a BlockDevice's.
 *
 * Notes on the design.
 *
 * The tree. Node 1 is the root directory, node 2 the file (`fileName`). Nothing can be
 * created, renamed or removed; the file's size is the device's and never changes, so the
 * kernel may cache names and attributes for as long as it likes (ATTR_VALID_SECONDS): a
 * stat of the file then rarely reaches us, which matters because a synchronous stat from
 * the serving thread would wait for the very thread that has to answer it.
 *
 * Who answers. The reader threads answer GETATTR, LOOKUP, STATFS, STATX and the xattr
 * requests themselves, from `readerReplies()` (see reader-worker.ts for why); everything
 * else, and all of those when a test hands them in directly, is answered here, the same way.
 *
 * Concurrency. `handle` never waits: it decodes a request, starts the device call and
 * returns, so the kernel can keep as many requests in flight as the readers have slots
 * (channel.ts). Replies go out in completion order, each as one write(2) through the
 * request's own `reply`. Requests are not serialised against each other, exactly as a block device's
 * are not: the loop driver and the filesystem above it order what needs ordering.
 *
 * Buffers. A request arrives in a reader slot that stays ours until `release()`. A WRITE's
 * payload is used where it lies (the reader aligned it for O_DIRECT); a READ's data is read
 * into the same slot at the same aligned offset and its reply header written in the 16 bytes
 * before it, so the reply is one contiguous range of the slot: no copy on either path.
 * Small replies use one scratch buffer: they are encoded and written synchronously, so it is
 * never shared by two replies.
 *
 * Requests and their states:
 *
 *   INIT              first message; we answer with our limits (max_write, max_pages, ...)
 *   LOOKUP, GETATTR   the two nodes; anything else ENOENT
 *   SETATTR           refused (EPERM) unless it changes nothing: a device cannot be resized,
 *                     chmod-ed or chown-ed; time updates are accepted and ignored
 *   OPEN              EROFS for writing when read-only; answered with DEFAULT_OPEN_FLAGS:
 *                     FOPEN_DIRECT_IO (no page cache for any opener: every access is
 *                     coherent with the device) and FOPEN_PARALLEL_DIRECT_WRITES (no
 *                     exclusive inode lock per write)
 *   READ, WRITE       clamped at the device's end (a READ past it reads 0 bytes, a WRITE
 *                     starting at or past it is ENOSPC, one crossing it is short)
 *   FLUSH             nothing to do: close(2) does not promise durability
 *   FSYNC             device.flush()
 *   INTERRUPT         we cannot cancel device I/O: a request we are running finishes and is
 *                     answered normally; one we have not seen is answered EAGAIN so the kernel
 *                     sends the interrupt again later
 *   FORGET, BATCH_FORGET   no reply (the protocol's rule)
 *   DESTROY           answered; the session is over
 *   anything else     ENOSYS (the kernel remembers and stops asking for most)
 */
import { assert, type BlockDevice } from '@fss/core';
import {
  DT_DIR,
  DT_REG,
  FUSE_ROOT_ID,
  InitFlag,
  Opcode,
  OpenFlag,
  opcodeName,
  S_IFDIR,
  S_IFREG,
  SetattrValid,
  Size,
  WRITE_PAYLOAD_OFFSET,
} from './abi';
import {
  type Attributes,
  readInHeader,
  readInitIn,
  readInterruptIn,
  readIoIn,
  readName,
  readOpenFlags,
  readSetattrIn,
  writeAttrOut,
  writeDirent,
  writeEntryOut,
  writeInitOut,
  writeOpenOut,
  writeOutHeader,
  writeStatfsOut,
  writeWriteOut,
} from './codec';
import { fuseErrnoOf } from './errors';
import type { ReaderReplies } from './reader-worker';

/** Node id (and inode number) of the one file. */
export const FILE_NODE_ID = 2;

/** How long the kernel may cache names and attributes: they never change. */
const ATTR_VALID_SECONDS = 365 * 24 * 3600;
/**
 * FOPEN flags of every OPEN. DIRECT_IO: no opener of the file ever goes through the page
 * cache, so every read sees the device as it is now (the device may also change through
 * other paths, e.g. an origin's NBD export) and nothing is cached twice under a loop device.
 * The loop driver's O_DIRECT requests stay asynchronous either way (FUSE_ASYNC_DIO).
 * PARALLEL_DIRECT_WRITES: direct writes take the inode lock shared, not exclusive, so
 * writes to different places of the file do not wait for each other in the kernel.
 */
export const DEFAULT_OPEN_FLAGS = OpenFlag.DIRECT_IO | OpenFlag.PARALLEL_DIRECT_WRITES;
/** Requests the kernel may keep in the background queue (async direct I/O counts here). */
export const DEFAULT_MAX_BACKGROUND = 128;

const ENOENT = 2;
const EIO = 5;
const EAGAIN = 11;
const EPERM = 1;
const ENOTDIR = 20;
const EISDIR = 21;
const EINVAL = 22;
const ENOSPC = 28;
const EROFS = 30;
const ENOSYS = 38;
const EPROTO = 71;
const O_ACCMODE = 3;
const O_RDONLY = 0;

/** A message read from /dev/fuse, in memory that stays ours until `release()`. */
export interface FuseRequest {
  /** The reader slot; the message is `bytes[0, length)`. */
  readonly bytes: Uint8Array;
  /** A view of `bytes` (same offset), made once per slot. */
  readonly view: DataView;
  readonly length: number;
  /**
   * Writes one whole reply with one write(2), to the descriptor the request was read from
   * (the kernel looks a reply up among the requests read through that descriptor only).
   * Throws what write(2) failed with.
   */
  reply(reply: Uint8Array): void;
  /** Gives the slot back to its reader. Called exactly once, after the reply was written. */
  release(): void;
}

export interface FuseSessionOptions {
  device: BlockDevice;
  /** Name of the file in the mount's root. */
  fileName: string;
  /** Refuse writes (EROFS at open and at WRITE). Forced on when the device is read-only. */
  readOnly: boolean;
  /** Largest WRITE (and READ) we accept: the reader slots hold this much payload. */
  maxWriteBytes: number;
  /** Owner of the file and directory. */
  uid: number;
  gid: number;
  /** FOPEN_* flags answered to every OPEN (default DEFAULT_OPEN_FLAGS). */
  openFlags?: number;
  /** INIT max_background (default 128). */
  maxBackground?: number;
  /** Called once per failure we could not answer with an errno (a failed reply write). */
  log?: (message: string) => void;
}

/** What the session did; tests and benchmarks read it. */
export interface FuseSessionStats {
  requests: number;
  byOpcode: Record<string, number>;
  inFlight: number;
  maxInFlight: number;
  readBytes: number;
  writtenBytes: number;
  deviceErrors: number;
  interrupts: number;
  /** INIT's negotiated values once it happened. */
  init: { kernelMinor: number; flags: number; maxWriteBytes: number } | undefined;
}

type SessionState = 'waiting-init' | 'running' | 'destroyed';

export class FuseSession {
  readonly stats: FuseSessionStats = {
    requests: 0,
    byOpcode: {},
    inFlight: 0,
    maxInFlight: 0,
    readBytes: 0,
    writtenBytes: 0,
    deviceErrors: 0,
    interrupts: 0,
    init: undefined,
  };
  private state: SessionState = 'waiting-init';
  private readonly device: BlockDevice;
  private readonly options: FuseSessionOptions;
  private readonly readOnly: boolean;
  private readonly scratch = Buffer.alloc(4096);
  private readonly scratchView = new DataView(
    this.scratch.buffer,
    this.scratch.byteOffset,
    this.scratch.length,
  );
  /** Requests handed to the device and not yet answered, by unique. */
  private readonly running = new Set<number>();
  private idleWaiters: Array<() => void> = [];
  private initWaiters: Array<() => void> = [];
  private nextFileHandle = 1;
  private readonly fileAttributes: Attributes;
  private readonly rootAttributes: Attributes;

  constructor(options: FuseSessionOptions) {
    assert(options.fileName.length > 0 && !options.fileName.includes('/'), 'file name must be one component');
    assert(options.fileName !== '.' && options.fileName !== '..', 'file name must not be . or ..');
    assert(options.maxWriteBytes >= 4096 && options.maxWriteBytes % 4096 === 0, 'max write is whole pages');
    this.options = options;
    this.device = options.device;
    this.readOnly = options.readOnly || options.device.readOnly;
    const timeSeconds = Math.floor(Date.now() / 1000);
    const owner = { uid: options.uid, gid: options.gid, timeSeconds };
    this.fileAttributes = {
      ...owner,
      inode: FILE_NODE_ID,
      sizeBytes: options.device.size,
      mode: S_IFREG | (this.readOnly ? 0o400 : 0o600),
      linkCount: 1,
      blockSizeBytes: Math.max(4096, options.device.logicalSectorSize),
    };
    this.rootAttributes = {
      ...owner,
      inode: FUSE_ROOT_ID,
      sizeBytes: 0,
      mode: S_IFDIR | 0o755,
      linkCount: 2,
      blockSizeBytes: 4096,
    };
  }

  /** True once DESTROY was answered. */
  get destroyed(): boolean {
    return this.state === 'destroyed';
  }

  /**
   * The replies the reader threads send themselves (reader-worker.ts): GETATTR of both nodes,
   * LOOKUP of the file, STATFS, and the ENOENT and ENOSYS answers, each a whole reply with
   * unique 0. They never change, because the tree and its attributes never do.
   */
  readerReplies(): ReaderReplies {
    const encode = (bodyBytes: number, fill: (view: DataView) => void, error = 0): Uint8Array => {
      const bytes = new Uint8Array(Size.OUT_HEADER + bodyBytes);
      const view = new DataView(bytes.buffer);
      fill(view);
      writeOutHeader(view, 0, bytes.length, -error, 0);
      return bytes;
    };
    const blockSizeBytes = this.fileAttributes.blockSizeBytes;
    return {
      getattrRoot: encode(Size.ATTR_OUT, (view) =>
        writeAttrOut(view, Size.OUT_HEADER, this.rootAttributes, ATTR_VALID_SECONDS),
      ),
      getattrFile: encode(Size.ATTR_OUT, (view) =>
        writeAttrOut(view, Size.OUT_HEADER, this.fileAttributes, ATTR_VALID_SECONDS),
      ),
      lookupFile: encode(Size.ENTRY_OUT, (view) =>
        writeEntryOut(view, Size.OUT_HEADER, this.fileAttributes, ATTR_VALID_SECONDS),
      ),
      lookupName: new TextEncoder().encode(`${this.options.fileName}\0`),
      statfs: encode(Size.STATFS_OUT, (view) =>
        writeStatfsOut(view, Size.OUT_HEADER, Math.ceil(this.device.size / blockSizeBytes), blockSizeBytes),
      ),
      enoent: encode(0, () => undefined, ENOENT),
      enosys: encode(0, () => undefined, ENOSYS),
    };
  }

  /** Resolves once INIT was answered: from then on the file can be opened. */
  whenInitialized(): Promise<void> {
    if (this.state !== 'waiting-init') return Promise.resolve();
    return new Promise((resolve) => this.initWaiters.push(resolve));
  }

  /** Resolves when no request is running on the device. */
  whenIdle(): Promise<void> {
    if (this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Decodes and answers one request (or starts answering it). Never throws for bad input. */
  handle(request: FuseRequest): void {
    const header = readInHeader(request.view, 0, request.length);
    const name = opcodeName(header.opcode);
    this.stats.requests++;
    this.stats.byOpcode[name] = (this.stats.byOpcode[name] ?? 0) + 1;
    if (this.state === 'waiting-init' && header.opcode !== Opcode.INIT) {
      this.replyError(request, header.unique, EIO);
      return;
    }
    switch (header.opcode) {
      case Opcode.INIT:
        this.init(request, header.unique);
        return;
      case Opcode.LOOKUP:
        this.lookup(request, header.unique, header.nodeId);
        return;
      case Opcode.GETATTR:
        this.getattr(request, header.unique, header.nodeId);
        return;
      case Opcode.SETATTR:
        this.setattr(request, header.unique, header.nodeId);
        return;
      case Opcode.OPEN:
        this.open(request, header.unique, header.nodeId);
        return;
      case Opcode.OPENDIR:
        this.opendir(request, header.unique, header.nodeId);
        return;
      case Opcode.READDIR:
        this.readdir(request, header.unique, header.nodeId);
        return;
      case Opcode.READ:
        this.read(request, header.unique, header.nodeId);
        return;
      case Opcode.WRITE:
        this.write(request, header.unique, header.nodeId);
        return;
      case Opcode.FSYNC:
        this.fsync(request, header.unique);
        return;
      case Opcode.STATFS:
        this.statfs(request, header.unique);
        return;
      case Opcode.FLUSH:
      case Opcode.RELEASE:
      case Opcode.RELEASEDIR:
      case Opcode.FSYNCDIR:
        this.replyEmpty(request, header.unique);
        return;
      case Opcode.INTERRUPT:
        this.interrupt(request, header.unique);
        return;
      case Opcode.FORGET:
      case Opcode.BATCH_FORGET:
        request.release();
        return;
      case Opcode.DESTROY:
        this.state = 'destroyed';
        this.replyEmpty(request, header.unique);
        return;
      default:
        this.replyError(request, header.unique, ENOSYS);
    }
  }

  private init(request: FuseRequest, unique: number): void {
    const offer = readInitIn(request.view, Size.IN_HEADER);
    if (offer.major !== 7) {
      this.replyError(request, unique, EPROTO);
      return;
    }
    const wanted =
      InitFlag.ASYNC_READ |
      InitFlag.BIG_WRITES |
      InitFlag.ASYNC_DIO |
      InitFlag.ABORT_ERROR |
      InitFlag.MAX_PAGES;
    const flags = offer.flags & wanted;
    const maxBackground = this.options.maxBackground ?? DEFAULT_MAX_BACKGROUND;
    const maxWriteBytes = this.options.maxWriteBytes;
    writeInitOut(this.scratchView, Size.OUT_HEADER, {
      maxReadaheadBytes: offer.maxReadaheadBytes,
      flags,
      maxBackground,
      congestionThreshold: Math.floor((maxBackground * 3) / 4),
      maxWriteBytes,
      maxPages: maxWriteBytes / 4096,
    });
    this.stats.init = { kernelMinor: offer.minor, flags, maxWriteBytes };
    this.state = 'running';
    this.replyScratch(request, unique, Size.INIT_OUT);
    const waiters = this.initWaiters;
    this.initWaiters = [];
    for (const wake of waiters) wake();
  }

  private lookup(request: FuseRequest, unique: number, parent: number): void {
    const name = readName(request.bytes, Size.IN_HEADER, request.length);
    if (parent !== FUSE_ROOT_ID || name !== this.options.fileName) {
      this.replyError(request, unique, ENOENT);
      return;
    }
    writeEntryOut(this.scratchView, Size.OUT_HEADER, this.fileAttributes, ATTR_VALID_SECONDS);
    this.replyScratch(request, unique, Size.ENTRY_OUT);
  }

  private attributesOf(nodeId: number): Attributes | undefined {
    if (nodeId === FILE_NODE_ID) return this.fileAttributes;
    if (nodeId === FUSE_ROOT_ID) return this.rootAttributes;
    return undefined;
  }

  private getattr(request: FuseRequest, unique: number, nodeId: number): void {
    const attributes = this.attributesOf(nodeId);
    if (attributes === undefined) {
      this.replyError(request, unique, ENOENT);
      return;
    }
    writeAttrOut(this.scratchView, Size.OUT_HEADER, attributes, ATTR_VALID_SECONDS);
    this.replyScratch(request, unique, Size.ATTR_OUT);
  }

  /** Accepts only what changes nothing: same size, time stamps (ignored), handle and lock bits. */
  private setattr(request: FuseRequest, unique: number, nodeId: number): void {
    const attributes = this.attributesOf(nodeId);
    if (attributes === undefined) {
      this.replyError(request, unique, ENOENT);
      return;
    }
    const { valid, sizeBytes } = readSetattrIn(request.view, Size.IN_HEADER);
    const changesOwner = (valid & (SetattrValid.MODE | SetattrValid.UID | SetattrValid.GID)) !== 0;
    const resizes = (valid & SetattrValid.SIZE) !== 0 && sizeBytes !== attributes.sizeBytes;
    if (changesOwner || resizes) {
      this.replyError(request, unique, EPERM);
      return;
    }
    writeAttrOut(this.scratchView, Size.OUT_HEADER, attributes, ATTR_VALID_SECONDS);
    this.replyScratch(request, unique, Size.ATTR_OUT);
  }

  private open(request: FuseRequest, unique: number, nodeId: number): void {
    if (nodeId === FUSE_ROOT_ID) {
      this.replyError(request, unique, EISDIR);
      return;
    }
    if (nodeId !== FILE_NODE_ID) {
      this.replyError(request, unique, ENOENT);
      return;
    }
    const access = readOpenFlags(request.view, Size.IN_HEADER) & O_ACCMODE;
    if (this.readOnly && access !== O_RDONLY) {
      this.replyError(request, unique, EROFS);
      return;
    }
    const openFlags = this.options.openFlags ?? DEFAULT_OPEN_FLAGS;
    writeOpenOut(this.scratchView, Size.OUT_HEADER, this.nextFileHandle++, openFlags);
    this.replyScratch(request, unique, Size.OPEN_OUT);
  }

  private opendir(request: FuseRequest, unique: number, nodeId: number): void {
    if (nodeId === FILE_NODE_ID) {
      this.replyError(request, unique, ENOTDIR);
      return;
    }
    if (nodeId !== FUSE_ROOT_ID) {
      this.replyError(request, unique, ENOENT);
      return;
    }
    writeOpenOut(this.scratchView, Size.OUT_HEADER, 0, 0);
    this.replyScratch(request, unique, Size.OPEN_OUT);
  }

  /** ".", ".." and the file; READDIR's offset is the index of the next entry to list. */
  private readdir(request: FuseRequest, unique: number, nodeId: number): void {
    if (nodeId !== FUSE_ROOT_ID) {
      this.replyError(request, unique, ENOTDIR);
      return;
    }
    const { offset, sizeBytes } = readIoIn(request.view, Size.IN_HEADER);
    const entries = [
      { inode: FUSE_ROOT_ID, type: DT_DIR, name: '.' },
      { inode: FUSE_ROOT_ID, type: DT_DIR, name: '..' },
      { inode: FILE_NODE_ID, type: DT_REG, name: this.options.fileName },
    ];
    const limit = Math.min(sizeBytes, this.scratch.length - Size.OUT_HEADER);
    let used = 0;
    for (let index = offset; index < entries.length; index++) {
      const entry = entries[index]!;
      const needed = (Size.DIRENT + Buffer.byteLength(entry.name) + 7) & ~7;
      if (used + needed > limit) break;
      used += writeDirent(this.scratch, this.scratchView, Size.OUT_HEADER + used, {
        ...entry,
        offset: index + 1,
      });
    }
    this.replyScratch(request, unique, used);
  }

  private read(request: FuseRequest, unique: number, nodeId: number): void {
    if (nodeId !== FILE_NODE_ID) {
      this.replyError(request, unique, nodeId === FUSE_ROOT_ID ? EISDIR : ENOENT);
      return;
    }
    const { offset, sizeBytes } = readIoIn(request.view, Size.IN_HEADER);
    const dataStart = WRITE_PAYLOAD_OFFSET;
    if (dataStart + sizeBytes > request.bytes.length) {
      this.replyError(request, unique, EINVAL);
      return;
    }
    const length = Math.max(0, Math.min(sizeBytes, this.device.size - offset));
    const headerStart = dataStart - Size.OUT_HEADER;
    if (length === 0) {
      this.replyFromSlot(request, unique, headerStart, 0);
      return;
    }
    const target = request.bytes.subarray(dataStart, dataStart + length);
    this.run(request, unique, this.device.read(target, offset), (bytesRead) => {
      this.stats.readBytes += bytesRead;
      this.replyFromSlot(request, unique, headerStart, bytesRead);
    });
  }

  private write(request: FuseRequest, unique: number, nodeId: number): void {
    if (nodeId !== FILE_NODE_ID) {
      this.replyError(request, unique, nodeId === FUSE_ROOT_ID ? EISDIR : ENOENT);
      return;
    }
    if (this.readOnly) {
      this.replyError(request, unique, EROFS);
      return;
    }
    const { offset, sizeBytes } = readIoIn(request.view, Size.IN_HEADER);
    if (request.length !== WRITE_PAYLOAD_OFFSET + sizeBytes) {
      this.replyError(request, unique, EINVAL);
      return;
    }
    if (offset >= this.device.size) {
      this.replyError(request, unique, ENOSPC);
      return;
    }
    const length = Math.min(sizeBytes, this.device.size - offset);
    const source = request.bytes.subarray(WRITE_PAYLOAD_OFFSET, WRITE_PAYLOAD_OFFSET + length);
    this.run(request, unique, this.device.write(source, offset), () => {
      this.stats.writtenBytes += length;
      writeWriteOut(this.scratchView, Size.OUT_HEADER, length);
      this.replyScratch(request, unique, Size.WRITE_OUT);
    });
  }

  private fsync(request: FuseRequest, unique: number): void {
    this.run(request, unique, this.device.flush(), () => this.replyEmpty(request, unique));
  }

  private statfs(request: FuseRequest, unique: number): void {
    const blockSizeBytes = this.fileAttributes.blockSizeBytes;
    writeStatfsOut(
      this.scratchView,
      Size.OUT_HEADER,
      Math.ceil(this.device.size / blockSizeBytes),
      blockSizeBytes,
    );
    this.replyScratch(request, unique, Size.STATFS_OUT);
  }

  private interrupt(request: FuseRequest, unique: number): void {
    const target = readInterruptIn(request.view, Size.IN_HEADER);
    this.stats.interrupts++;
    if (this.running.has(target)) {
      request.release(); // it finishes and is answered normally; the interrupt needs no reply
      return;
    }
    this.replyError(request, unique, EAGAIN);
  }

  /** Tracks a device call; answers with `done(result)` or with the error's errno. */
  private run<T>(request: FuseRequest, unique: number, call: Promise<T>, done: (result: T) => void): void {
    assert(!this.running.has(unique), `request ${unique} is already running`);
    this.running.add(unique);
    this.stats.inFlight = this.running.size;
    this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.running.size);
    call.then(
      (result) => {
        this.finish(unique);
        done(result);
      },
      (error: unknown) => {
        this.finish(unique);
        this.stats.deviceErrors++;
        this.replyError(request, unique, fuseErrnoOf(error));
      },
    );
  }

  private finish(unique: number): void {
    this.running.delete(unique);
    this.stats.inFlight = this.running.size;
    if (this.running.size > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  private replyEmpty(request: FuseRequest, unique: number): void {
    this.replyScratch(request, unique, 0);
  }

  private replyError(request: FuseRequest, unique: number, errno: number): void {
    assert(errno > 0 && errno < 512, `errno ${errno} out of range`);
    writeOutHeader(this.scratchView, 0, Size.OUT_HEADER, -errno, unique);
    this.send(request, this.scratch.subarray(0, Size.OUT_HEADER));
  }

  /** Sends header + `bodyBytes` already encoded in the scratch buffer after the header. */
  private replyScratch(request: FuseRequest, unique: number, bodyBytes: number): void {
    const length = Size.OUT_HEADER + bodyBytes;
    writeOutHeader(this.scratchView, 0, length, 0, unique);
    this.send(request, this.scratch.subarray(0, length));
  }

  /** Sends a reply laid out in the request's own slot: header at `at`, data right after. */
  private replyFromSlot(request: FuseRequest, unique: number, at: number, dataBytes: number): void {
    const length = Size.OUT_HEADER + dataBytes;
    writeOutHeader(request.view, at, length, 0, unique);
    this.send(request, request.bytes.subarray(at, at + length));
  }

  private send(request: FuseRequest, reply: Uint8Array): void {
    try {
      request.reply(reply);
    } catch (error) {
      // ENOENT: the request was interrupted or aborted meanwhile; ENODEV: the mount is gone.
      const code = (error as { code?: string }).code;
      if (code !== 'ENOENT' && code !== 'ENODEV') {
        this.options.log?.(`fuse: reply failed: ${(error as Error).message}`);
      }
    } finally {
      request.release();
    }
  }
}
