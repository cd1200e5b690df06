/**
 * The fss control interface, ioctl-compatible with NetBSD's fssvar.h: the five requests with
 * their LP64 numbers, the argument shapes, and the flag bits. The daemon's control protocol
 * carries these names and numbers unchanged.
 *
 * Encoding (NetBSD sys/ioccom.h): bits 31..29 direction (0x80000000 IN = the kernel reads
 * the argument, 0x40000000 OUT, 0x20000000 VOID), bits 28..16 argument size, 15..8 group
 * ('F' = 0x46), 7..0 number.
 */

const IOC_VOID = 0x20000000;
const IOC_OUT = 0x40000000;
const IOC_IN = 0x80000000;
const IOCPARM_MASK = 0x1fff;
const FSS_GROUP = 0x46; // 'F'

function ioc(direction: number, number: number, argumentBytes: number): number {
  return (direction | ((argumentBytes & IOCPARM_MASK) << 16) | (FSS_GROUP << 8) | number) >>> 0;
}

/** sizeof(struct fss_set) on LP64: two pointers, a 32-bit blksize_t and an int. */
export const FSS_SET_BYTES = 24;
/** sizeof(struct fss_get) on LP64: char[90], timeval (aligned to 96), blksize_t, two blkcnt_t. */
export const FSS_GET_BYTES = 136;
/** NetBSD's MNAMELEN: fsg_mount holds at most 89 characters and a NUL. */
export const MNAMELEN = 90;

export const FSSIOCSET = ioc(IOC_IN, 5, FSS_SET_BYTES); // 0x80184605
export const FSSIOCGET = ioc(IOC_OUT, 1, FSS_GET_BYTES); // 0x40884601
export const FSSIOCCLR = ioc(IOC_VOID, 2, 0); // 0x20004602
export const FSSIOFSET = ioc(IOC_IN, 3, 4); // 0x80044603
export const FSSIOFGET = ioc(IOC_OUT, 4, 4); // 0x40044604

export const FSS_IOCTLS = { FSSIOCSET, FSSIOCGET, FSSIOCCLR, FSSIOFSET, FSSIOFGET } as const;
export type FssIoctlName = keyof typeof FSS_IOCTLS;

/** Unconfigure the unit when the last client that has it open closes. */
export const FSS_UNCONFIG_ON_CLOSE = 0x01;
/** Unlink the backing-store path once it is open, before the snapshot is taken. */
export const FSS_UNLINK_ON_CREATE = 0x02;
export const FSS_FLAGS_ALL = FSS_UNCONFIG_ON_CLOSE | FSS_UNLINK_ON_CREATE;

/** The name of an ioctl number, or undefined. */
export function ioctlName(request: number): FssIoctlName | undefined {
  for (const [name, value] of Object.entries(FSS_IOCTLS)) {
    if (value === request) return name as FssIoctlName;
  }
  return undefined;
}

/** FSSIOCSET's argument. */
export interface FssSet {
  /** What to snapshot: NetBSD's mount point; here a device, image file or mount point. */
  fss_mount: string;
  /** The backing store: a file, a directory (temporary file inside) or a raw device. */
  fss_bstore: string;
  /** The preferred cluster size in bytes; 0 for the default. */
  fss_csize: number;
  /** FSS_UNCONFIG_ON_CLOSE | FSS_UNLINK_ON_CREATE. */
  fss_flags: number;
}

/** struct timeval. */
export interface TimeVal {
  tv_sec: number;
  tv_usec: number;
}

/** FSSIOCGET's result. */
export interface FssGet {
  /** The path the snapshot was taken of. */
  fsg_mount: string;
  /** When the snapshot was taken. */
  fsg_time: TimeVal;
  /** The cluster size in bytes. */
  fsg_csize: number;
  /** The origin's size in clusters. */
  fsg_mount_size: number;
  /** Backing-store clusters in use, including the header and the indirect table. */
  fsg_bs_size: number;
}

export function timeValFromMs(epochMs: number): TimeVal {
  const tv_sec = Math.floor(epochMs / 1000);
  return { tv_sec, tv_usec: Math.round((epochMs - tv_sec * 1000) * 1000) };
}
