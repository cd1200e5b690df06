/**
 * What one export looks like to clients: its name, size, transmission flags and block sizes,
 * all derived from the BlockDevice behind it (STYLE 4: capabilities come from the device,
 * never from separate config), so the flags can never promise what the device lacks.
 *
 *   READ_ONLY          the device is read-only (a snapshot) or the export was made read-only
 *   SEND_FLUSH         always: FLUSH is harmless on a read-only export, and clients send it
 *   SEND_FUA           writable exports (FUA = write, then flush, then reply)
 *   SEND_TRIM          writable exports whose device has discard() (an origin copies first)
 *   SEND_WRITE_ZEROES  writable exports whose device has writeZeroes(); a device without it
 *                      gets no WRITE_ZEROES (clients then write zero buffers themselves, and
 *                      the request is refused with EINVAL if one sends it anyway)
 *   CAN_MULTI_CONN     always: every connection shares the one device object in this process,
 *                      there is no per-connection cache, and FLUSH flushes the whole device,
 *                      so a flush on one connection covers writes replied on every other
 *
 * Metadata contexts: `base:allocation` always, from the device's allocation capability
 * (meta-context.ts), then whatever `metaContexts` returns at the moment a client asks.
 */
import { assert, type BlockDevice, isPowerOfTwo } from '@fss/core';
import { baseAllocationContext, type NbdMetaContext } from './meta-context';
import { Limits, TransmissionFlag } from './protocol';

export interface NbdExportOptions {
  /** The export's name; clients may also use the empty (default) name. */
  name: string;
  /** The device served. Snapshots are read-only devices; an origin copies-on-write itself. */
  device: BlockDevice;
  /** Shown by `nbdinfo --list`. */
  description?: string;
  /** Serve a writable device read-only. */
  readOnly?: boolean;
  /**
   * Preferred block size (power of two ≥ the sector size). Default: the device's
   * `preferredIoSize` (a snapshot's cluster size), else 4096.
   */
  preferredBlockSize?: number;
  /**
   * Metadata contexts the export offers besides `base:allocation` (which comes from the
   * device), asked for at every LIST/SET_META_CONTEXT so the list may change over time.
   * Names must be `namespace:leaf` and must not be in the `base:` namespace.
   */
  metaContexts?: () => readonly NbdMetaContext[];
}

export interface NbdExport {
  readonly name: string;
  readonly description: string;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly size: number;
  readonly transmissionFlags: number;
  readonly minimumBlockSize: number;
  readonly preferredBlockSize: number;
  readonly maximumBlockSize: number;
  /** The contexts offered right now: base:allocation first, then the export's own. */
  metaContexts(): readonly NbdMetaContext[];
}

/** Validates the options and works out what the export advertises. */
export function describeExport(options: NbdExportOptions): NbdExport {
  const { device } = options;
  const nameBytes = Buffer.byteLength(options.name);
  assert(nameBytes <= Limits.NAME_BYTES_MAX, 'export name must be at most 4096 bytes');
  assert(Number.isSafeInteger(device.size) && device.size >= 0, 'device size must be a byte count');
  const minimumBlockSize = device.logicalSectorSize;
  assert(isPowerOfTwo(minimumBlockSize) && minimumBlockSize <= 65536, 'sector size must be 2^n ≤ 64 KiB');
  const preferredDefault = Math.min(device.preferredIoSize ?? 4096, Limits.PAYLOAD_BYTES_MAX);
  const preferredBlockSize = Math.max(options.preferredBlockSize ?? preferredDefault, minimumBlockSize, 512);
  assert(isPowerOfTwo(preferredBlockSize), 'preferred block size must be a power of two');
  assert(preferredBlockSize <= Limits.PAYLOAD_BYTES_MAX, 'preferred block size must be ≤ 32 MiB');
  const readOnly = device.readOnly || options.readOnly === true;
  const baseAllocation = baseAllocationContext(device);

  let flags = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.CAN_MULTI_CONN;
  if (readOnly) {
    flags |= TransmissionFlag.READ_ONLY;
  } else {
    flags |= TransmissionFlag.SEND_FUA;
    if (device.writeZeroes !== undefined) flags |= TransmissionFlag.SEND_WRITE_ZEROES;
    if (device.discard !== undefined) flags |= TransmissionFlag.SEND_TRIM;
  }
  return {
    name: options.name,
    description: options.description ?? '',
    device,
    readOnly,
    size: device.size,
    transmissionFlags: flags,
    minimumBlockSize,
    preferredBlockSize,
    maximumBlockSize: Limits.PAYLOAD_BYTES_MAX,
    metaContexts: () => [baseAllocation, ...checkedContexts(options.metaContexts?.() ?? [])],
  };
}

/** The export's own contexts, checked where they enter: named `ns:leaf`, unique, not `base:`. */
function checkedContexts(contexts: readonly NbdMetaContext[]): readonly NbdMetaContext[] {
  for (const each of contexts) {
    assert(each.name.indexOf(':') > 0, `meta context ${each.name} needs a namespace`);
    assert(!each.name.startsWith('base:'), `meta context ${each.name}: base: is the server's`);
  }
  assert(new Set(contexts.map((each) => each.name)).size === contexts.length, 'meta context names unique');
  return contexts;
}
