/**
 * Reading what stock tools say about an export's extents (`nbdinfo --map`, `qemu-img map
 * --output=json`) into one shape, and the model it is compared with: a state per cluster,
 * merged into runs. Tests build the model from what they did (clusters written, holes
 * punched, units taken) and expect the tool's runs to equal it exactly.
 */

/** A run of bytes with one state: nbdinfo's type number (base:allocation: 0 data, 3 hole+zero). */
export interface MapRun {
  offset: number;
  length: number;
  type: number;
}

/** Parses `nbdinfo --map` text (`offset length type description` per line), merged. */
export function parseNbdinfoMap(stdout: string): MapRun[] {
  const runs: MapRun[] = [];
  for (const line of stdout.split('\n')) {
    if (line.trim() === '') continue;
    const match = /^\s*(\d+)\s+(\d+)\s+(\d+)/.exec(line);
    if (match === null) throw new Error(`not an nbdinfo --map line: ${line}`);
    appendMapRun(runs, { offset: Number(match[1]), length: Number(match[2]), type: Number(match[3]) });
  }
  return runs;
}

/**
 * Parses `qemu-img map --output=json` into base:allocation types (HOLE 1 | ZERO 2), merged:
 * qemu's `data: false` is a hole and `zero: true` reads as zeroes.
 */
export function parseQemuImgMap(stdout: string): MapRun[] {
  const entries = JSON.parse(stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
  const runs: MapRun[] = [];
  for (const entry of entries) {
    const type = (entry.data ? 0 : 1) | (entry.zero ? 2 : 0);
    appendMapRun(runs, { offset: entry.start, length: entry.length, type });
  }
  return runs;
}

/** The runs of a per-cluster model: cluster `i` has type `types[i]`; the last may be short. */
export function modelRuns(types: readonly number[], clusterBytes: number, sizeBytes: number): MapRun[] {
  const runs: MapRun[] = [];
  types.forEach((type, index) => {
    const offset = index * clusterBytes;
    appendMapRun(runs, { offset, length: Math.min(clusterBytes, sizeBytes - offset), type });
  });
  return runs;
}

function appendMapRun(runs: MapRun[], run: MapRun): void {
  const last = runs.at(-1);
  if (last !== undefined && last.offset + last.length !== run.offset) {
    throw new Error(`map runs are not consecutive at ${run.offset}`);
  }
  if (last !== undefined && last.type === run.type) last.length += run.length;
  else runs.push({ ...run });
}
