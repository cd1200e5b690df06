/**
 * Executing validated requests against the export's BlockDevice and sending their replies.
 *
 * Each command ends in exactly one reply: success, or the error value the FssError maps to
 * (errors.ts). A device error never closes the connection.
 *
 *   READ          only an empty READ comes here (OK at once); the others go through ReadMerger
 *   BLOCK_STATUS  a chunk per selected metadata context (block-status.ts)
 *   WRITE         write the payload; FUA: flush before the reply
 *   FLUSH         device.flush(): every write replied before this FLUSH began has completed,
 *                 so it is covered (NBD's FLUSH rule), on every connection (CAN_MULTI_CONN)
 *   TRIM          device.discard() (an origin copies the old data first)
 *   WRITE_ZEROES  device.writeZeroes() (only advertised, and only validated, when the device
 *                 has it; a device that cannot zero by itself falls back inside writeZeroes)
 *
 * On an origin, copy-on-write happens inside the device's write/discard/writeZeroes, before
 * the data changes, so by the time we reply the snapshots already hold the old contents.
 */
import { assert, type BlockDevice } from '@fss/core';
import { answerBlockStatus } from './block-status';
import { nbdErrnoOf } from './errors';
import type { NbdExport } from './export';
import type { SelectedContext } from './meta-context';
import { Command, CommandFlag, NbdErrno } from './protocol';
import type { ReplyWriter } from './reply-writer';
import type { NbdRequest } from './request';

/**
 * Runs one validated request and sends its reply. Never rejects: failures become error
 * replies. `payload` is the WRITE data (exactly `request.length` bytes), else undefined.
 */
export async function execute(
  request: NbdRequest,
  payload: Uint8Array | undefined,
  target: NbdExport,
  writer: ReplyWriter,
  metaContexts: readonly SelectedContext[] = [],
): Promise<void> {
  try {
    if (request.type === Command.READ) {
      // READs of at least one byte go through the ReadMerger; an empty one is just answered.
      assert(request.length === 0, 'only an empty READ reaches execute');
      writer.send(request.cookie, NbdErrno.OK);
      return;
    }
    if (request.type === Command.BLOCK_STATUS) {
      await answerBlockStatus(request, metaContexts, writer);
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
      assert(device.writeZeroes !== undefined, 'WRITE_ZEROES was validated against writeZeroes()');
      if (length > 0) await device.writeZeroes(offset, length);
      return;
    default:
      assert(false, `command ${request.type} reached execute`);
  }
}
