/**
 * The FUSE kernel ABI, the one source of truth for every number and struct layout this
 * package speaks (from <linux/fuse.h>, protocol 7.38; read for facts, not copied).
 *
 * Byte order is the host's (FUSE is a local protocol: the kernel and the server share a
 * machine), which on every architecture the package supports (x86_64, aarch64) is little
 * endian; codec.ts reads and writes every field little-endian and asserts the host is.
 *
 * Every message from the kernel starts with a 40-byte `fuse_in_header`, then the opcode's
 * own struct, then (WRITE only) the payload. Every reply starts with a 16-byte
 * `fuse_out_header`, then the opcode's reply struct or payload, and must be one write(2).
 *
 *   fuse_in_header (40)                     fuse_out_header (16)
 *     0 u32 len       whole message           0 u32 len     whole reply
 *     4 u32 opcode                            4 i32 error   0 or -errno
 *     8 u64 unique    request id, echoed      8 u64 unique  the request's id
 *    16 u64 nodeid    inode the op is about
 *    24 u32 uid, 28 u32 gid, 32 u32 pid       of the calling process
 *    36 u16 total_extlen (8-byte units), 38 u16 padding
 */

/** The protocol we implement: major 7, minor 38 (Linux 6.2's header, a subset of 6.18's). */
export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 38;

/** Node id of the mount's root directory (fixed by the protocol). */
export const FUSE_ROOT_ID = 1;

/** Opcodes (enum fuse_opcode). Only the ones we answer or recognise by name. */
export const Opcode = {
  LOOKUP: 1,
  FORGET: 2, // no reply
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42, // no reply
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const satisfies Record<string, number>;

export type OpcodeName = keyof typeof Opcode;

const OPCODE_NAMES = new Map<number, OpcodeName>(
  Object.entries(Opcode).map(([name, value]) => [value, name as OpcodeName]),
);

/** The opcode's name for logs ("WRITE"), or `OP_<n>` for one we do not know. */
export function opcodeName(opcode: number): string {
  return OPCODE_NAMES.get(opcode) ?? `OP_${opcode}`;
}

/**
 * INIT flags (fuse_init_in.flags / fuse_init_out.flags), the ones we ask for. The kernel
 * offers what it supports; we answer with the intersection of that and what we want.
 */
export const InitFlag = {
  /** Reads may be sent in parallel (without it the kernel serialises them per file). */
  ASYNC_READ: 1 << 0,
  /** Writes larger than 4 KiB (always on in modern kernels; harmless to ask). */
  BIG_WRITES: 1 << 5,
  /** Direct I/O is submitted asynchronously: loop's O_DIRECT requests stay in flight together. */
  ASYNC_DIO: 1 << 15,
  /** Reading /dev/fuse after an abort answers ECONNABORTED instead of ENODEV. */
  ABORT_ERROR: 1 << 21,
  /** fuse_init_out.max_pages is valid: requests up to max_pages pages (1 MiB at 256). */
  MAX_PAGES: 1 << 22,
} as const satisfies Record<string, number>;

/** OPEN reply flags (fuse_open_out.open_flags). */
export const OpenFlag = {
  /** Bypass the page cache for this open file: every read and write reaches us. */
  DIRECT_IO: 1 << 0,
  /** Direct writes to one inode may run in parallel (no exclusive inode lock per write). */
  PARALLEL_DIRECT_WRITES: 1 << 6,
} as const satisfies Record<string, number>;

/** fuse_setattr_in.valid bits we look at. */
export const SetattrValid = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const satisfies Record<string, number>;

/** FSYNC flag: data only (fdatasync). We treat both kinds the same: the device has no metadata. */
export const FSYNC_FDATASYNC = 1 << 0;

/** The smallest read buffer the kernel accepts on /dev/fuse (EINVAL below it). */
export const FUSE_MIN_READ_BUFFER = 8192;

/** FUSE_DEV_IOC_CLONE = _IOR(229, 0, uint32_t): attach a new /dev/fuse fd to a session. */
export const FUSE_DEV_IOC_CLONE = 0x8004e500;

/** Struct sizes in bytes (protocol 7.38 layouts). */
export const Size = {
  IN_HEADER: 40,
  OUT_HEADER: 16,
  /** fuse_attr: ino size blocks atime mtime ctime (u64 each), 3 × u32 nsec, mode nlink uid gid rdev blksize flags. */
  ATTR: 88,
  /** fuse_entry_out: nodeid generation entry_valid attr_valid (u64), 2 × u32 nsec, fuse_attr. */
  ENTRY_OUT: 128,
  /** fuse_attr_out: attr_valid (u64), attr_valid_nsec, dummy (u32), fuse_attr. */
  ATTR_OUT: 104,
  /** fuse_open_out: fh (u64), open_flags, padding (u32). */
  OPEN_OUT: 16,
  /** fuse_read_in / fuse_write_in: fh offset (u64), size flags (u32), lock_owner (u64), flags padding (u32). */
  READ_IN: 40,
  WRITE_IN: 40,
  /** fuse_write_out: size, padding (u32). */
  WRITE_OUT: 8,
  /** fuse_kstatfs: blocks bfree bavail files ffree (u64), bsize namelen frsize padding (u32), spare[6]. */
  STATFS_OUT: 80,
  /** fuse_init_in: major minor max_readahead flags flags2 (u32), unused[11]. The kernel may send only 16. */
  INIT_IN_MIN: 16,
  /** fuse_init_out: major minor max_readahead flags (u32), max_background congestion_threshold (u16), max_write time_gran (u32), max_pages map_alignment (u16), flags2 (u32), unused[7]. */
  INIT_OUT: 64,
  /** fuse_open_in: flags, open_flags (u32). */
  OPEN_IN: 8,
  /** fuse_interrupt_in: unique (u64). */
  INTERRUPT_IN: 8,
  /** fuse_batch_forget_in: count, dummy (u32); then count × fuse_forget_one (16). */
  BATCH_FORGET_IN: 8,
  /** fuse_setattr_in: valid padding (u32), fh size lock_owner atime mtime ctime (u64), ... */
  SETATTR_IN: 88,
  /** fuse_fsync_in: fh (u64), fsync_flags, padding (u32). */
  FSYNC_IN: 16,
  /** fuse_dirent header: ino off (u64), namelen type (u32); then the name, padded to 8. */
  DIRENT: 24,
} as const satisfies Record<string, number>;

/**
 * Bytes before a WRITE's payload in the message (in_header + write_in). The reader places
 * every message so that this offset lands on an aligned address: the payload can then go
 * to an O_DIRECT device without a bounce copy.
 */
export const WRITE_PAYLOAD_OFFSET = Size.IN_HEADER + Size.WRITE_IN;

/** File type bits of fuse_attr.mode (as in stat(2)). */
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
/** d_type values in fuse_dirent.type. */
export const DT_DIR = 4;
export const DT_REG = 8;
