/**
 * NBD_CMD_BLOCK_STATUS: one BLOCK_STATUS chunk per selected metadata context, the last one
 * carrying DONE.
 *
 * Every context is asked at once (they are independent); what each returns is held to the
 * spec before it is sent, whatever the provider did:
 *
 *   - extents start at the request's offset and are consecutive (that is what they mean);
 *   - each is non-empty (a provider's empty extent is a bug: the request fails with EIO);
 *   - the answer is clipped to the requested range, so no extent runs past it and every length
 *     fits the u32 on the wire (the spec lets the last one run past; nothing gains from it);
 *   - with REQ_ONE, exactly one extent (the first, clipped);
 *   - at most BLOCK_STATUS_EXTENTS_MAX per chunk (clients ask again from where it ended);
 *   - neighbours with the same flags are merged (the spec: SHOULD differ where feasible).
 *
 * A context that fails (an invalid snapshot: ENXIO; a unit gone meanwhile) fails the whole
 * request with one ERROR chunk: no chunk is written until every context has answered, so a
 * client never sees half a reply.
 */
import { assert, FssError } from '@fss/core';
import { nbdErrnoOf } from './errors';
import type { NbdExtent, SelectedContext } from './meta-context';
import { BLOCK_STATUS_EXTENTS_MAX, CommandFlag } from './protocol';
import type { ReplyWriter } from './reply-writer';
import type { NbdRequest } from './request';

/** One chunk of a BLOCK_STATUS reply: a context's id and its extents. */
export interface BlockStatusChunk {
  readonly contextId: number;
  readonly extents: readonly NbdExtent[];
}

/** Answers a validated BLOCK_STATUS request (length > 0, in range). Never rejects. */
export async function answerBlockStatus(
  request: NbdRequest,
  contexts: readonly SelectedContext[],
  writer: ReplyWriter,
): Promise<void> {
  assert(contexts.length > 0, 'BLOCK_STATUS was judged against a selected context');
  assert(request.length > 0, 'BLOCK_STATUS was judged to have a length');
  const reqOne = (request.flags & CommandFlag.REQ_ONE) !== 0;
  const extentsMax = reqOne ? 1 : BLOCK_STATUS_EXTENTS_MAX;
  try {
    const chunks = await Promise.all(
      contexts.map(async ({ id, context }) => ({
        contextId: id,
        extents: clipExtents(
          context.name,
          await context.extents(request.offset, request.length, extentsMax),
          request.length,
          extentsMax,
        ),
      })),
    );
    writer.sendBlockStatus(request.cookie, chunks);
  } catch (error) {
    writer.send(request.cookie, nbdErrnoOf(error));
  }
}

/**
 * Holds a provider's extents to the rules above: non-empty, merged, clipped to `length`
 * bytes and `extentsMax` extents. At least one extent comes out.
 */
export function clipExtents(
  name: string,
  extents: readonly NbdExtent[],
  length: number,
  extentsMax: number,
): NbdExtent[] {
  if (extents.length === 0) throw new FssError('EIO', `meta context ${name} returned no extents`);
  const out: NbdExtent[] = [];
  let covered = 0;
  for (const extent of extents) {
    if (!Number.isSafeInteger(extent.length) || extent.length <= 0) {
      throw new FssError('EIO', `meta context ${name} returned an extent of ${extent.length} bytes`);
    }
    const piece = Math.min(extent.length, length - covered);
    const flags = extent.flags >>> 0;
    const last = out.at(-1);
    if (last !== undefined && last.flags === flags) {
      out[out.length - 1] = { length: last.length + piece, flags };
    } else {
      if (out.length === extentsMax) break;
      out.push({ length: piece, flags });
    }
    covered += piece;
    if (covered === length) break;
  }
  assert(covered > 0 && covered <= length, 'the clipped extents cover part of the request');
  return out;
}
