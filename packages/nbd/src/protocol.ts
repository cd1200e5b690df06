/**
 * The NBD wire format: every magic number, option, reply type, flag, command and error value
 * fss uses, in one file (STYLE 16). Source: NetworkBlockDevice/nbd doc/proto.md @89ba7b53.
 *
 * Everything on the wire is big-endian ("network byte order"). Strings carry no NUL and are
 * at most 4096 bytes. Layouts (byte ranges are half-open):
 *
 *   greeting       S→C 18 B  [0,8) NBD_MAGIC | [8,16) IHAVEOPT | [16,18) u16 handshake flags
 *   client flags   C→S  4 B  u32
 *   option         C→S 16 B  [0,8) IHAVEOPT | [8,12) u32 option | [12,16) u32 length | data
 *   option reply   S→C 20 B  [0,8) OPTION_REPLY_MAGIC | [8,12) u32 option | [12,16) u32 type
 *                            | [16,20) u32 length | data
 *   EXPORT_NAME ok S→C 10 B  u64 size | u16 transmission flags (+124 zero bytes without NO_ZEROES)
 *   request        C→S 28 B  [0,4) u32 REQUEST_MAGIC | [4,6) u16 command flags | [6,8) u16 type
 *                            | [8,16) u64 cookie | [16,24) u64 offset | [24,28) u32 length | payload
 *   simple reply   S→C 16 B  [0,4) u32 SIMPLE_REPLY_MAGIC | [4,8) u32 error | [8,16) u64 cookie
 *                            | payload (READ with error 0 only)
 *   structured     S→C 20 B  [0,4) u32 STRUCTURED_REPLY_MAGIC | [4,6) u16 flags (DONE)
 *   reply chunk              | [6,8) u16 type | [8,16) u64 cookie | [16,20) u32 length | payload
 *     OFFSET_DATA            payload: u64 offset, data
 *     BLOCK_STATUS           payload: u32 context id, n × (u32 extent length, u32 status flags)
 *     ERROR                  payload: u32 error, u16 message length, message
 *
 * Only the fixed newstyle handshake is implemented, not oldstyle. STARTTLS is answered by
 * servers given TLS credentials, which then require it (starttls.ts); others refuse it with
 * ERR_UNSUP (they serve unix sockets owned by the user).
 * Structured replies are offered (libnbd and qemu ask for them) with metadata contexts
 * (`base:allocation`, and what the export adds: meta-context.ts); extended headers are not.
 */

/** "NBDMAGIC": the first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": the rest of the greeting, and the prefix of every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Prefix of every option reply. */
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
/** Prefix of every transmission request. */
export const REQUEST_MAGIC = 0x25609513;
/** Prefix of every simple reply. */
export const SIMPLE_REPLY_MAGIC = 0x67446698;
/** Prefix of every structured reply chunk. */
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Byte lengths of the fixed-size messages. */
export const GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
export const REQUEST_BYTES = 28;
export const SIMPLE_REPLY_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
/** A structured READ reply before its data: the chunk header and the u64 offset. */
export const STRUCTURED_READ_HEADER_BYTES = 28;
/** The zero padding after the EXPORT_NAME reply unless NO_ZEROES was negotiated. */
export const EXPORT_NAME_PADDING_BYTES = 124;

/** Handshake flags (u16, greeting). The server MUST NOT set others. */
export const HandshakeFlag = {
  /** We speak fixed newstyle: unknown options get ERR_UNSUP instead of a disconnect. */
  FIXED_NEWSTYLE: 0x0001,
  /** We may omit the 124 zero bytes after the EXPORT_NAME reply. */
  NO_ZEROES: 0x0002,
} as const;

/** Client flags (u32, sent right after the greeting). Unknown bits: disconnect. */
export const ClientFlag = {
  FIXED_NEWSTYLE: 0x00000001,
  NO_ZEROES: 0x00000002,
} as const;

/** Options (u32) a client sends during the handshake. */
export const Option = {
  /** Data: the export name. Replied with size+flags (no option reply); enters transmission. */
  EXPORT_NAME: 1,
  /** No data. Replied with ACK, then the server closes. */
  ABORT: 2,
  /** No data. Replied with one SERVER reply per export, then ACK. */
  LIST: 3,
  /** No data. ACK, then the TLS handshake on the same socket (servers with credentials). */
  STARTTLS: 5,
  /** Data: u32 name length, name, u16 n, n × u16 info type. Replied with INFO…, then ACK. */
  INFO: 6,
  /** As INFO, and on ACK the connection enters transmission. */
  GO: 7,
  /** No data. ACK: from now on replies are structured chunks. */
  STRUCTURED_REPLY: 8,
  /** Data: u32 name length, name, u32 n, n × (u32 length, query). META_CONTEXT…, then ACK. */
  LIST_META_CONTEXT: 9,
  /** As LIST_META_CONTEXT, and selects the contexts (structured replies first). */
  SET_META_CONTEXT: 10,
  /** Experimental 64-bit headers; refused. */
  EXTENDED_HEADERS: 11,
} as const;

/** Option reply types (u32). Errors have bit 31 set and may carry a UTF-8 message. */
export const Reply = {
  /** The option succeeded (final reply). */
  ACK: 1,
  /** LIST: u32 name length, name, optional description. */
  SERVER: 2,
  /** INFO/GO: u16 info type, then its body. */
  INFO: 3,
  /** LIST/SET_META_CONTEXT: u32 context id, context name. */
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  /** The option's data is malformed. */
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  /** TLS-required mode: the option was sent before STARTTLS. */
  ERR_TLS_REQD: 0x80000005,
  /** No export of that name. */
  ERR_UNKNOWN: 0x80000006,
  /** The server is shutting down. */
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  /** The option's data is longer than we accept. */
  ERR_TOO_BIG: 0x80000009,
} as const;

/** Info types (u16) inside a Reply.INFO. */
export const Info = {
  /** 12 B: u16 type, u64 size, u16 transmission flags. MUST be sent on INFO/GO success. */
  EXPORT: 0,
  /** u16 type, the export's name. */
  NAME: 1,
  /** u16 type, a description. */
  DESCRIPTION: 2,
  /** 14 B: u16 type, u32 minimum, u32 preferred, u32 maximum payload. */
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags (u16), sent with INFO_EXPORT or the EXPORT_NAME reply. */
export const TransmissionFlag = {
  /** Always set. */
  HAS_FLAGS: 0x0001,
  /** Writes, trims and write-zeroes fail (with EPERM). */
  READ_ONLY: 0x0002,
  /** NBD_CMD_FLUSH is accepted. */
  SEND_FLUSH: 0x0004,
  /** NBD_CMD_FLAG_FUA is accepted. */
  SEND_FUA: 0x0008,
  /** Hint only; never set. */
  ROTATIONAL: 0x0010,
  /** NBD_CMD_TRIM is accepted. */
  SEND_TRIM: 0x0020,
  /** NBD_CMD_WRITE_ZEROES (and NO_HOLE) is accepted. */
  SEND_WRITE_ZEROES: 0x0040,
  /** Several connections share state: a FLUSH on one covers writes replied on all. */
  CAN_MULTI_CONN: 0x0100,
} as const;

/** Command types (u16). */
export const Command = {
  READ: 0,
  WRITE: 1,
  /** Disconnect: no reply; finish what is in flight, then close. */
  DISC: 2,
  /** Offset and length are 0; makes every write replied so far durable. */
  FLUSH: 3,
  /** Advisory deallocation. */
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags (u16). Any flag not valid for the command is EINVAL. */
export const CommandFlag = {
  /** Force unit access: reply only once this command's data is durable. */
  FUA: 0x0001,
  /** WRITE_ZEROES: really write the zeroes (we always do). */
  NO_HOLE: 0x0002,
  /** READ: don't fragment (structured replies only). */
  DF: 0x0004,
  REQ_ONE: 0x0008,
  FAST_ZERO: 0x0010,
} as const;

/** Structured reply chunk flags (u16). */
export const ReplyFlag = {
  /** The last chunk of this request's reply. */
  DONE: 0x0001,
} as const;

/** Structured reply chunk types (u16). Bit 15 marks errors. */
export const ChunkType = {
  /** No payload; only with DONE (a success without data). */
  NONE: 0,
  /** u64 offset, then data. */
  OFFSET_DATA: 1,
  /** u32 context id, then (u32 length, u32 flags) extents. */
  BLOCK_STATUS: 5,
  /** u32 error, u16 message length, message. */
  ERROR: 0x8001,
} as const;

/** The metadata context every export offers (meta-context.ts). */
export const BASE_ALLOCATION = 'base:allocation';
/** qemu's namespace for dirty bitmaps: `qemu:dirty-bitmap:NAME`, flag bit 0 = dirty. */
export const QEMU_DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';

/** Extent status flags (u32) of BLOCK_STATUS descriptors, per context. */
export const ExtentFlag = {
  /** base:allocation: no storage is allocated to the extent. */
  HOLE: 0x1,
  /** base:allocation: the extent reads as zeroes. */
  ZERO: 0x2,
  /** qemu:dirty-bitmap:*: the extent is dirty (changed). */
  DIRTY: 0x1,
} as const;

/** Extents per BLOCK_STATUS chunk at most (spec: SHOULD NOT exceed 2^20; qemu sends 2^17). */
export const BLOCK_STATUS_EXTENTS_MAX = 131072;

/** The only error values allowed on the wire (simple reply `error`). */
export const NbdErrno = {
  OK: 0,
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrnoValue = (typeof NbdErrno)[keyof typeof NbdErrno];

/** Limits we enforce (STYLE 18: a fixed limit on everything). */
export const Limits = {
  /** Longest option data we read: a name is ≤4096 B, plus headers and info requests. */
  OPTION_DATA_BYTES_MAX: 8192,
  /** Longest export name (spec: MUST be ≤4096). */
  NAME_BYTES_MAX: 4096,
  /** Options per handshake before we give up on a client that never finishes. */
  OPTION_COUNT_MAX: 256,
  /** Largest READ/WRITE payload (2^25, 32 MiB): advertised as the maximum block size. */
  PAYLOAD_BYTES_MAX: 32 * 1024 * 1024,
} as const;

/** Debug name tables derived from the constants above (never written by hand). */
function invert<T extends Record<string, number>>(table: T): Map<number, string> {
  return new Map(Object.entries(table).map(([name, value]) => [value, name]));
}
const OPTION_NAMES = invert(Option);
const COMMAND_NAMES = invert(Command);
const REPLY_NAMES = invert(Reply);

export function optionName(option: number): string {
  return OPTION_NAMES.get(option) ?? `OPT_${option}`;
}
export function commandName(command: number): string {
  return COMMAND_NAMES.get(command) ?? `CMD_${command}`;
}
export function replyName(reply: number): string {
  return REPLY_NAMES.get(reply) ?? `REP_0x${reply.toString(16)}`;
}
