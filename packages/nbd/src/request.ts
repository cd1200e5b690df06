/**
 * Transmission requests: parsing the 28-byte header and deciding, before touching the device,
 * whether a request is malformed (close the connection), refused (an error reply, the
 * connection stays usable) or to be executed.
 *
 *   malformed → close        bad magic; a WRITE payload longer than the advertised maximum
 *                            (we cannot skip 4 GiB of junk safely); a READ longer than it
 *                            (the reply would be as large)
 *   refused   → error reply  unknown command or flag (EINVAL); BLOCK_STATUS without a
 *                            metadata context selected, or of length 0 (EINVAL); a write-type
 *                            command on a read-only export (EPERM); an offset past 2^53
 *                            (EINVAL); a range crossing the end: READ/TRIM/BLOCK_STATUS
 *                            EINVAL, WRITE/WRITE_ZEROES ENOSPC (spec "Size constraints"); TRIM
 *                            on a device without discard, WRITE_ZEROES on a device without
 *                            writeZeroes (EINVAL: neither was advertised)
 *
 * The order of the checks matters only for which error a doubly-bad request gets; it mirrors
 * nbdkit's server/protocol.c validate_request (flags, read-only, range).
 */
import { assert } from '@fss/core';
import type { NbdExport } from './export';
import { Command, CommandFlag, Limits, NbdErrno, type NbdErrnoValue, REQUEST_MAGIC } from './protocol';

export interface NbdRequest {
  /** Command flags (CommandFlag bits). */
  readonly flags: number;
  /** Command type (Command). */
  readonly type: number;
  /**
   * The client's opaque 8-byte id, echoed in the reply: a view of the header, which is a fresh
   * buffer or a view of a received socket chunk, and neither is ever written again.
   */
  readonly cookie: Uint8Array;
  /** Byte offset; a safe integer when the request passed validation, else -1. */
  readonly offset: number;
  /** Byte length (u32). */
  readonly length: number;
}

/** What the connection must do with a parsed header. */
export type Verdict =
  | { readonly kind: 'close'; readonly reason: string }
  | { readonly kind: 'reply'; readonly error: NbdErrnoValue }
  | { readonly kind: 'execute' };

const FLAGS_ALLOWED: Readonly<Record<number, number>> = {
  [Command.READ]: CommandFlag.FUA,
  [Command.BLOCK_STATUS]: CommandFlag.REQ_ONE,
  [Command.WRITE]: CommandFlag.FUA,
  [Command.FLUSH]: CommandFlag.FUA,
  [Command.TRIM]: CommandFlag.FUA,
  [Command.WRITE_ZEROES]: CommandFlag.FUA | CommandFlag.NO_HOLE,
  [Command.DISC]: 0,
};

/** The verdict of every request to run: one object, not one per request. */
const EXECUTE: Verdict = Object.freeze({ kind: 'execute' });

/** High half of the largest u64 offset below 2^53 (Number.MAX_SAFE_INTEGER). */
const SAFE_OFFSET_HIGH_MAX = 0x1f_ffff;

/** Big-endian loads without a DataView or BigInt per header (a header per request). */
function getUint32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

function getUint16(bytes: Uint8Array, at: number): number {
  return (bytes[at]! << 8) | bytes[at + 1]!;
}

/** Parses a 28-byte request header; undefined when the magic is wrong. */
export function parseRequest(header: Uint8Array): NbdRequest | undefined {
  assert(header.length === 28, 'a request header is 28 bytes');
  if (getUint32(header, 0) !== REQUEST_MAGIC) return undefined;
  // The u64 offset as two u32s: below 2^53 exactly when the high half is at most 2^21 - 1.
  const high = getUint32(header, 16);
  let offset = -1;
  if (high <= SAFE_OFFSET_HIGH_MAX) {
    offset = high * 0x1_0000_0000 + getUint32(header, 20);
    assert(Number.isSafeInteger(offset), 'an offset below 2^53 is a safe integer');
  }
  return {
    flags: getUint16(header, 4),
    type: getUint16(header, 6),
    cookie: header.subarray(8, 16),
    offset,
    length: getUint32(header, 24),
  };
}

/** True when the request carries `length` bytes of payload after the header. */
export function hasPayload(request: NbdRequest): boolean {
  return request.type === Command.WRITE;
}

/**
 * Decides what to do with a request to `target`; see the table at the top of the file.
 * `contextsSelected`: the client selected a metadata context, so BLOCK_STATUS is allowed.
 */
export function judgeRequest(request: NbdRequest, target: NbdExport, contextsSelected = false): Verdict {
  const { type, length } = request;
  if ((type === Command.WRITE || type === Command.READ) && length > Limits.PAYLOAD_BYTES_MAX) {
    return {
      kind: 'close',
      reason: `${length}-byte payload exceeds the ${Limits.PAYLOAD_BYTES_MAX} maximum`,
    };
  }
  const allowed = FLAGS_ALLOWED[type];
  if (allowed === undefined) return refuse(NbdErrno.EINVAL);
  if (type === Command.BLOCK_STATUS && (!contextsSelected || length === 0)) return refuse(NbdErrno.EINVAL);
  if ((request.flags & ~allowed) !== 0) return refuse(NbdErrno.EINVAL);
  const writes = type === Command.WRITE || type === Command.TRIM || type === Command.WRITE_ZEROES;
  if (writes && target.readOnly) return refuse(NbdErrno.EPERM);
  if (type === Command.FLUSH || type === Command.DISC) return EXECUTE;
  if (request.offset < 0) return refuse(NbdErrno.EINVAL);
  if (request.offset + length > target.size) {
    const readLike = type === Command.READ || type === Command.TRIM || type === Command.BLOCK_STATUS;
    return refuse(readLike ? NbdErrno.EINVAL : NbdErrno.ENOSPC);
  }
  if (type === Command.TRIM && target.device.discard === undefined) return refuse(NbdErrno.EINVAL);
  if (type === Command.WRITE_ZEROES && target.device.writeZeroes === undefined)
    return refuse(NbdErrno.EINVAL);
  return EXECUTE;
}

function refuse(error: NbdErrnoValue): Verdict {
  assert(error !== NbdErrno.OK, 'a refusal carries an error');
  return { kind: 'reply', error };
}
