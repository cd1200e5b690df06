/**
 * Executing validated requests against the export's BlockDevice and sending their replies.
 *
 * Each command ends in exactly one reply: success, or the error value the FssError maps to
 * (errors.ts). A device error never closes the connection.
 *
 *   READ          read into the reply buffer (or the device's own buffer), then reply with it
 *   BLOCK_STATUS  one extent, status 0 (allocated data): we keep no allocation map
 *   WRITE         write the payload; FUA: flush before the reply
 *   FLUSH         device.flush(): every write replied before this FLUSH began has completed,
 *                 so it is covered (NBD's FLUSH rule), on every connection (CAN_MULTI_CONN)
 *   TRIM          device.discard() (an origin copies the old data first)
 *   WRITE_ZEROES  device.writeZeroes(), else zero buffers of at most ZERO_CHUNK_BYTES
 *
 * On an origin, copy-on-write happens inside the device's write/discard/writeZeroes, before
 * the data changes, so by the time we reply the snapshots already hold the old contents.
 */
import { assert, type BlockDevice } from '@fss/core';
import type { BufferPool } from './buffer-pool';
import { nbdErrnoOf } from './errors';
import type { NbdExport } from './export';
import { BASE_ALLOCATION_CONTEXT_ID, Command, CommandFlag, NbdErrno } from './protocol';
import type { ReplyWriter } from './reply-writer';
import type { NbdRequest } from './request';

/** Largest zero buffer WRITE_ZEROES writes at a time on a device without writeZeroes. */
const ZERO_CHUNK_BYTES = 1024 * 1024;
let zeroChunk: Uint8Array | undefined;

/**
 * Runs one validated request and sends its reply. Never rejects: failures become error
 * replies. `payload` is the WRITE data (exactly `request.length` bytes), else undefined.
 */
export async function execute(
  request: NbdRequest,
  payload: Uint8Array | undefined,
  target: NbdExport,
  writer: ReplyWriter,
  pool: BufferPool,
): Promise<void> {
  try {
    if (request.type === Command.READ) {
      await executeRead(request, target.device, writer, pool);
      return;
    }
    if (request.type === Command.BLOCK_STATUS) {
      // base:allocation: everything is "allocated, data" (status 0), always a correct answer;
      // one extent up to the end of the request (the range was checked against the size).
      writer.sendBlockStatus(request.cookie, BASE_ALLOCATION_CONTEXT_ID, request.length);
      return;
    }
    await executeWrite(request, payload, target.device);
    if ((request.flags & CommandFlag.FUA) !== 0 && request.type !== Command.FLUSH) {
      await target.device.flush();
    }
    writer.send(request.cookie, NbdErrno.OK);
  } catch (error) {
    writer.send(request.cookie, nbdErrnoOf(error));
  }
}

/**
 * READ into a pooled buffer. A device with allocateBuffer gets its own (aligned) buffers and
 * the header goes out corked beside them; otherwise the buffer has header room in front and
 * the reply is a single write.
 */
async function executeRead(
  request: NbdRequest,
  device: BlockDevice,
  writer: ReplyWriter,
  pool: BufferPool,
): Promise<void> {
  const { offset, length } = request;
  if (length === 0) {
    writer.send(request.cookie, NbdErrno.OK);
    return;
  }
  const deviceBuffers = device.allocateBuffer !== undefined;
  const headerBytes = deviceBuffers ? 0 : writer.readHeaderBytes;
  const buffer = pool.acquire(headerBytes + length);
  try {
    const bytesRead = await device.read(headerBytes === 0 ? buffer : buffer.subarray(headerBytes), offset);
    checkFullRead(bytesRead, length);
  } catch (error) {
    pool.release(buffer);
    throw error;
  }
  if (deviceBuffers) writer.sendReadSplit(request.cookie, offset, buffer, () => pool.release(buffer));
  else writer.sendRead(request.cookie, offset, buffer, () => pool.release(buffer));
}

/** The range was checked against the size, so a short read means the device failed. */
function checkFullRead(bytesRead: number, length: number): void {
  if (bytesRead !== length) throw new Error(`short read: ${bytesRead} of ${length} bytes`);
}

async function executeWrite(
  request: NbdRequest,
  payload: Uint8Array | undefined,
  device: BlockDevice,
): Promise<void> {
  const { offset, length } = request;
  switch (request.type) {
    case Command.WRITE:
      assert(payload !== undefined && payload.length === length, 'WRITE carries its payload');
      await device.write(payload, offset);
      return;
    case Command.FLUSH:
      await device.flush();
      return;
    case Command.TRIM:
      assert(device.discard !== undefined, 'TRIM was validated against discard()');
      if (length > 0) await device.discard(offset, length);
      return;
    case Command.WRITE_ZEROES:
      if (length > 0) await writeZeroes(device, offset, length);
      return;
    default:
      assert(false, `command ${request.type} reached execute`);
  }
}

async function writeZeroes(device: BlockDevice, offset: number, length: number): Promise<void> {
  if (device.writeZeroes !== undefined) {
    await device.writeZeroes(offset, length);
    return;
  }
  zeroChunk ??= new Uint8Array(ZERO_CHUNK_BYTES);
  for (let at = 0; at < length; at += ZERO_CHUNK_BYTES) {
    await device.write(zeroChunk.subarray(0, Math.min(ZERO_CHUNK_BYTES, length - at)), offset + at);
  }
}
