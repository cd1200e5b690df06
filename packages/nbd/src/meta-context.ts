/**
 * Metadata contexts (NBD "Metadata querying"): what an export can report per extent through
 * NBD_CMD_BLOCK_STATUS, and how LIST_META_CONTEXT and SET_META_CONTEXT queries pick them.
 *
 * The server stays generic: an export offers contexts as `NbdMetaContext`s, a name and an
 * extents function. Every export offers `base:allocation`, answered from its device's
 * allocation capability (holes of an image file) or, for a device that cannot tell, one
 * "allocated data" extent (status 0, always a true answer). Whoever creates the export may
 * add more (fssd adds `qemu:dirty-bitmap:fssN`); the list is asked for at each option, so
 * contexts that come and go (units being configured) are current for every client.
 *
 * Queries (a query MUST start with a namespace and a colon):
 *
 *   query                      LIST_META_CONTEXT                SET_META_CONTEXT
 *   (no query at all)          every context of the export      selects nothing
 *   `ns:` or `ns:a:b:`         every context whose name starts  nothing (the spec: a wildcard
 *   (ends with a colon)        with the query (`base:`, `qemu:`, SHOULD NOT select)
 *                              `qemu:dirty-bitmap:`)
 *   an exact context name      that context                     that context
 *   anything else              nothing (unknown names and namespaces are ignored)
 *   no colon                   ERR_INVALID                      ERR_INVALID
 *
 * A context picked by several queries is answered once. SET gives the picked contexts the ids
 * 1, 2, … in the export's order (ids are per SET, so a client cannot carry them over) and
 * replaces the previous selection, even when it fails; contexts count only for the export
 * named in the last SET, and only if GO or EXPORT_NAME then picks that export.
 */
import { type AllocationRun, assert, type BlockDevice } from '@fss/core';
import { BASE_ALLOCATION, ExtentFlag } from './protocol';

/** One extent of a BLOCK_STATUS reply: `length` bytes with the context's `flags`. */
export interface NbdExtent {
  readonly length: number;
  readonly flags: number;
}

export interface NbdMetaContext {
  /** `namespace:leaf`, e.g. `base:allocation`, `qemu:dirty-bitmap:fss0`. */
  readonly name: string;
  /**
   * Extents from `offset`, consecutive: at least one, each non-empty, at most `extentsMax`,
   * covering at most `length` bytes (the server clips any excess). A rejection becomes an
   * error reply to that BLOCK_STATUS (its FssError code through the errno table).
   */
  extents(offset: number, length: number, extentsMax: number): Promise<readonly NbdExtent[]>;
}

/** A context the client selected, with the id SET_META_CONTEXT gave it. */
export interface SelectedContext {
  readonly id: number;
  readonly context: NbdMetaContext;
}

/** The contexts a query list picks; `invalid` names a query without a namespace. */
export type ContextMatch =
  | { readonly kind: 'contexts'; readonly contexts: readonly NbdMetaContext[] }
  | { readonly kind: 'invalid'; readonly query: string };

/** Matches `queries` against an export's contexts, as LIST (`list`) or SET (`set`) does. */
export function matchContexts(
  available: readonly NbdMetaContext[],
  queries: readonly string[],
  mode: 'list' | 'set',
): ContextMatch {
  const invalid = queries.find((query) => !hasNamespace(query));
  if (invalid !== undefined) return { kind: 'invalid', query: invalid };
  if (queries.length === 0) return { kind: 'contexts', contexts: mode === 'list' ? available : [] };
  const picks = (context: NbdMetaContext): boolean =>
    queries.some((query) =>
      query.endsWith(':') ? mode === 'list' && context.name.startsWith(query) : context.name === query,
    );
  return { kind: 'contexts', contexts: available.filter(picks) };
}

/** Numbers the contexts SET selected: 1, 2, … (0 is what LIST replies carry). */
export function selectContexts(contexts: readonly NbdMetaContext[]): SelectedContext[] {
  assert(new Set(contexts.map((each) => each.name)).size === contexts.length, 'each context once');
  return contexts.map((context, index) => ({ id: index + 1, context }));
}

/** A non-empty namespace without colons, then a colon. */
function hasNamespace(query: string): boolean {
  return query.indexOf(':') > 0;
}

/**
 * `base:allocation` of a device: from its `allocation` capability when it has one (a hole
 * of an image file is HOLE|ZERO), else one extent of allocated data over the whole query.
 */
export function baseAllocationContext(device: BlockDevice): NbdMetaContext {
  const { allocation } = device;
  if (allocation === undefined) {
    return { name: BASE_ALLOCATION, extents: async (_offset, length) => [{ length, flags: 0 }] };
  }
  return {
    name: BASE_ALLOCATION,
    extents: async (offset, length, extentsMax) =>
      (await allocation.call(device, offset, length, extentsMax)).map(allocationExtent),
  };
}

function allocationExtent(run: AllocationRun): NbdExtent {
  const flags = (run.hole ? ExtentFlag.HOLE : 0) | (run.zero ? ExtentFlag.ZERO : 0);
  return { length: run.length, flags };
}
