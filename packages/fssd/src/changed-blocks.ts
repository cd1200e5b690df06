/**
 * Changed-block tracking (issue 13): which extents of an origin were written since a unit was
 * taken, and between two units of the same origin, without reading any data.
 *
 * Since fssN: fssN's copied bitmap. Every origin write preserves the clusters it touches for
 * every active snapshot before it is issued, so a cluster is copied exactly when it was
 * written after the snapshot moment (a write that failed after its copy makes the answer a
 * superset, never a subset). Only a valid unit's bitmap is complete: an invalid unit stopped
 * copying, so what changed since it is unknown.
 *
 * Between fssM and fssN (fssM older): when fssN is taken, inside the origin's write gate (no
 * write in flight, none starts), each older unit's copied bitmap is recorded as fssN's
 * *baseline* for it: the clusters written after fssM and before fssN. A baseline is kept with
 * the unit (and with its record when the unit is persistent, deflated and base64-encoded), so
 * `--since` needs no scan and survives fssd restarts. An older unit that was already invalid
 * when fssN was taken gets a baseline saying so: the changes between them are unknown.
 *
 * Units are told apart by an `id` drawn at configuration: a unit number configured again
 * later is another snapshot, and fssN has no baseline for it (it is not older).
 *
 * Extents are byte ranges at cluster granularity, adjacent clusters merged, the last one
 * clipped to the device's size; in the clusters of the unit whose bitmap they come from
 * (fssN's without `since`, fssM's with it), which `clusterSize` reports.
 */
import { randomBytes } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { ChangedResult, Extent } from '@fss/control';
import { unitName } from '@fss/control';
import { assert, FssError, type SnapshotGeometry } from '@fss/core';
import type { Snapshot } from '@fss/engine';

const WORD_BITS = 32;

/** What an older unit had copied when a unit was taken. */
export type Baseline =
  | { readonly unit: number; readonly id: string; readonly known: true; readonly words: Uint32Array }
  | { readonly unit: number; readonly id: string; readonly known: false; readonly reason: string };

/** A baseline as a persistent unit's record holds it. */
export type BaselineRecord =
  | { unit: number; id: string; copied: string }
  | { unit: number; id: string; unknown: string };

/** What the tracker needs to know of a configured unit. */
export interface TrackedUnit {
  readonly index: number;
  readonly id: string;
  readonly snapshot: Snapshot;
  /** The origin it snapshots (compared by identity). */
  readonly origin: unknown;
  /** Its baselines, by older unit number. */
  readonly baselines: ReadonlyMap<number, Baseline>;
}

/** A fresh unit id: 16 hex digits. */
export function newUnitId(): string {
  return randomBytes(8).toString('hex');
}

/**
 * The baselines of a unit being taken, from the units of its origin configured before it.
 * Runs inside the write gate (Snapshot's onActivate): synchronous, copies only bitmaps.
 */
export function recordBaselines(older: readonly Omit<TrackedUnit, 'baselines'>[]): Map<number, Baseline> {
  const baselines = new Map<number, Baseline>();
  for (const unit of older) {
    const { snapshot } = unit;
    baselines.set(
      unit.index,
      snapshot.valid
        ? { unit: unit.index, id: unit.id, known: true, words: snapshot.copiedWords() }
        : {
            unit: unit.index,
            id: unit.id,
            known: false,
            reason: `${unitName(unit.index)} was invalid (${snapshot.invalidReason ?? 'unknown'})`,
          },
    );
  }
  return baselines;
}

export function encodeBaseline(baseline: Baseline): BaselineRecord {
  if (!baseline.known) return { unit: baseline.unit, id: baseline.id, unknown: baseline.reason };
  const bytes = Buffer.from(baseline.words.buffer, baseline.words.byteOffset, baseline.words.byteLength);
  return { unit: baseline.unit, id: baseline.id, copied: deflateRawSync(bytes).toString('base64') };
}

/** A recorded baseline back; a damaged one is a baseline whose changes are unknown. */
export function decodeBaseline(record: BaselineRecord): Baseline {
  const { unit, id } = record;
  if ('unknown' in record) return { unit, id, known: false, reason: record.unknown };
  try {
    const bytes = inflateRawSync(Buffer.from(record.copied, 'base64'));
    if (bytes.length % 4 !== 0) throw new Error(`${bytes.length} bytes is not a bitmap of 32-bit words`);
    const words = new Uint32Array(bytes.length / 4);
    Buffer.from(words.buffer).set(bytes);
    return { unit, id, known: true, words };
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    return { unit, id, known: false, reason: `its recorded baseline is unreadable (${why})` };
  }
}

/**
 * The set bits of `words` as byte extents of a device of `geometry`: runs of clusters merged,
 * the last cluster clipped to the device's end.
 */
export function extentsOf(words: Uint32Array, geometry: SnapshotGeometry): Extent[] {
  const { clusterCount, clusterSize, deviceBytes } = geometry;
  assert(words.length === Math.ceil(clusterCount / WORD_BITS), 'a bitmap of the geometry');
  const isSet = (cluster: number) => ((words[cluster >>> 5]! >>> (cluster & 31)) & 1) === 1;
  const extents: Extent[] = [];
  let cluster = 0;
  while (cluster < clusterCount) {
    // Whole empty words are skipped 32 clusters at a time.
    if ((cluster & 31) === 0 && words[cluster >>> 5] === 0) {
      cluster += WORD_BITS;
      continue;
    }
    if (!isSet(cluster)) {
      cluster += 1;
      continue;
    }
    const first = cluster;
    while (cluster < clusterCount && isSet(cluster)) cluster += 1;
    const offset = first * clusterSize;
    extents.push({ offset, length: Math.min(cluster * clusterSize, deviceBytes) - offset });
  }
  return extents;
}

/**
 * `fss changed fssN [--since fssM]`: `unit` must be configured and valid; `since`, when given,
 * configured on the same origin before `unit` was taken, with a known baseline.
 */
export function changedExtents(unit: TrackedUnit, since: TrackedUnit | undefined): ChangedResult {
  const { words, geometry } = changedBitmap(unit, since);
  return {
    unit: unitName(unit.index),
    since: since === undefined ? null : unitName(since.index),
    clusterSize: geometry.clusterSize,
    extents: extentsOf(words, geometry),
  };
}

/**
 * What `changedExtents` answers, as the bitmap it comes from (one bit per cluster of
 * `geometry`), with the same rules and errors: NBD's qemu:dirty-bitmap contexts read it
 * (dirty-bitmaps.ts).
 */
export function changedBitmap(
  unit: TrackedUnit,
  since: TrackedUnit | undefined,
): { words: Uint32Array; geometry: SnapshotGeometry } {
  const name = unitName(unit.index);
  const { snapshot } = unit;
  if (!snapshot.valid) {
    throw new FssError(
      'ENXIO',
      `${name} is invalid (${snapshot.invalidReason ?? 'unknown'}): what changed since it was taken is unknown`,
      { syscall: 'changed' },
    );
  }
  if (since === undefined) return { words: snapshot.copiedWords(), geometry: snapshot.geometry };
  const sinceName = unitName(since.index);
  if (since.index === unit.index) {
    throw new FssError('EINVAL', `--since ${sinceName}: a unit is not older than itself`, {
      syscall: 'changed',
    });
  }
  if (since.origin !== unit.origin) {
    throw new FssError(
      'EINVAL',
      `--since ${sinceName}: it is a snapshot of ${since.snapshot.mount}, ${name} of ` +
        `${snapshot.mount}: not the same origin`,
      { syscall: 'changed' },
    );
  }
  const baseline = unit.baselines.get(since.index);
  if (baseline === undefined || baseline.id !== since.id) {
    throw new FssError(
      'EINVAL',
      `--since ${sinceName}: ${sinceName} is not older than ${name} (it was configured after ${name} was taken)`,
      { syscall: 'changed' },
    );
  }
  if (!baseline.known) {
    throw new FssError(
      'ENXIO',
      `--since ${sinceName}: when ${name} was taken, ${baseline.reason}: the changes between them are unknown`,
      { syscall: 'changed' },
    );
  }
  const geometry = since.snapshot.geometry;
  if (baseline.words.length !== Math.ceil(geometry.clusterCount / WORD_BITS)) {
    throw new FssError('ENXIO', `--since ${sinceName}: its recorded baseline does not fit its geometry`, {
      syscall: 'changed',
    });
  }
  return { words: baseline.words, geometry };
}
