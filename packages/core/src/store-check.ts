/**
 * Checking a backing store offline (what `fssck` runs): does it say what it is, do its
 * geometry fields agree with each other, and does its indirect table describe data that is
 * there, each stored cluster once. No I/O of its own: it reads through `StoreSource`.
 *
 * Findings come in three severities:
 *   error    the store cannot be trusted as a snapshot: a bad header, fields that contradict
 *            each other, a table entry pointing into the header or the table, a data cluster
 *            mapped twice or not at all, an invalidated snapshot
 *   warning  worth knowing, harmless: entries a commit that did not complete left beyond
 *            `next cluster` (a reattaching daemon ignores them: their origin writes were
 *            never issued), a store that was never activated
 *   info     what the store is
 * A store is clean when it has no error. The check never throws on what it reads: every
 * oddity is a finding, so a corrupted store can be examined as safely as a good one.
 *
 * Memory is bounded by the table (one cluster at a time) plus one bit per store cluster in
 * use. The store should not be in use by a daemon while it is checked: a commit in flight
 * looks like unmapped data.
 */
import { CopiedBitmap } from './bitmap';
import { toFssError } from './errors';
import {
  type DecodedHeader,
  decodeHeader,
  HEADER_BYTES,
  readTableEntry,
  type StoreHeader,
  type StoreLayout,
  storeClusterOffset,
  storeLayout,
  tableClustersFor,
  tableStoreCluster,
} from './format';
import { CLUSTER_COUNT_MAX, CLUSTER_SHIFT_LIMIT, clusterCountFor, geometryOf } from './geometry';

/** Where the checker reads the store from. */
export interface StoreSource {
  /** Bytes the store holds, when known (a file's size, a device's). */
  readonly sizeBytes: number | undefined;
  /** Up to `length` bytes at `offset`; fewer (or none) past the end. */
  read(offset: number, length: number): Promise<Uint8Array>;
}

export type FindingSeverity = 'error' | 'warning' | 'info';

export interface StoreFinding {
  severity: FindingSeverity;
  /** A stable name for the kind of finding (header, geometry, table, duplicate, …). */
  code: string;
  message: string;
}

export interface StoreCheck {
  /** The decoded header, when it could be decoded. */
  header: DecodedHeader | undefined;
  /** Origin clusters the table says are stored (below next cluster). */
  copiedClusters: number;
  /** Entries beyond next cluster: left by a commit that did not complete, ignored. */
  tornEntries: number;
  findings: StoreFinding[];
  /** No error among the findings. */
  clean: boolean;
}

/** The smallest cluster a store can have (a 512-byte sector). */
const CLUSTER_SHIFT_MIN = 9;
/** Findings of one kind past this many are summarised, so a wrecked store gives a readable report. */
const FINDINGS_PER_CODE_MAX = 20;

export async function checkStore(source: StoreSource): Promise<StoreCheck> {
  const report = new Report();
  const header = await readHeader(source, report);
  if (header === undefined) return report.result(undefined, 0, 0);
  const layout = checkGeometry(header, source, report);
  if (layout === undefined) return report.result(header, 0, 0);
  const { copied, torn } = await checkTable(header, layout, source, report);
  return report.result(header, copied, torn);
}

class Report {
  private readonly findings: StoreFinding[] = [];
  private readonly perCode = new Map<string, number>();

  add(severity: FindingSeverity, code: string, message: string): void {
    const count = (this.perCode.get(code) ?? 0) + 1;
    this.perCode.set(code, count);
    if (count <= FINDINGS_PER_CODE_MAX) this.findings.push({ severity, code, message });
    else if (count === FINDINGS_PER_CODE_MAX + 1) {
      this.findings.push({ severity, code, message: `more ${code} findings like the above; not listed` });
    }
  }

  result(header: DecodedHeader | undefined, copiedClusters: number, tornEntries: number): StoreCheck {
    const clean = !this.findings.some((finding) => finding.severity === 'error');
    return { header, copiedClusters, tornEntries, findings: this.findings, clean };
  }
}

async function readHeader(source: StoreSource, report: Report): Promise<DecodedHeader | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await source.read(0, HEADER_BYTES);
  } catch (error) {
    report.add('error', 'read', `cannot read the header: ${toFssError(error).message}`);
    return undefined;
  }
  try {
    const header = decodeHeader(bytes);
    report.add('info', 'header', `format version ${header.version}, commit ${header.commitSequence}`);
    return header;
  } catch (error) {
    report.add('error', 'header', toFssError(error).description);
    return undefined;
  }
}

/** The header's fields against each other and the store's size; the layout when they agree. */
function checkGeometry(header: StoreHeader, source: StoreSource, report: Report): StoreLayout | undefined {
  const { clusterShift, deviceBytes, clusterCount } = header;
  if (!(clusterShift >= CLUSTER_SHIFT_MIN && clusterShift < CLUSTER_SHIFT_LIMIT)) {
    report.add('error', 'geometry', `cluster shift ${clusterShift} is outside ${CLUSTER_SHIFT_MIN}..31`);
    return undefined;
  }
  if (!Number.isSafeInteger(deviceBytes) || deviceBytes <= 0) {
    report.add('error', 'geometry', `origin size ${deviceBytes} is not a positive byte count`);
    return undefined;
  }
  const expectedCount = clusterCountFor(deviceBytes, clusterShift);
  if (clusterCount !== expectedCount) {
    report.add(
      'error',
      'geometry',
      `cluster count ${clusterCount}, but ${deviceBytes} bytes make ${expectedCount}`,
    );
    return undefined;
  }
  if (clusterCount > CLUSTER_COUNT_MAX + 1) {
    report.add('error', 'geometry', `cluster count ${clusterCount} exceeds ${CLUSTER_COUNT_MAX + 1}`);
    return undefined;
  }
  const expectedTable = tableClustersFor(clusterCount, clusterShift);
  if (header.tableClusters !== expectedTable) {
    report.add(
      'error',
      'geometry',
      `table clusters ${header.tableClusters}, but the geometry needs ${expectedTable}`,
    );
    return undefined;
  }
  const geometry = geometryOf(deviceBytes, clusterShift, 0); // cache slots: not the store's business
  const layout = storeLayout(geometry);
  if (header.nextCluster < layout.firstDataCluster) {
    report.add(
      'error',
      'geometry',
      `next cluster ${header.nextCluster} lies inside the header and table (data starts at ${layout.firstDataCluster})`,
    );
    return undefined;
  }
  const inUseBytes = storeClusterOffset(layout, header.nextCluster);
  if (source.sizeBytes !== undefined && source.sizeBytes < inUseBytes) {
    report.add(
      'error',
      'size',
      `the header says ${header.nextCluster} clusters are in use (${inUseBytes} bytes), the store holds ${source.sizeBytes}`,
    );
  }
  if (header.state === 'invalid') {
    report.add(
      'error',
      'invalid',
      `the snapshot was invalidated: ${header.invalidReason || 'no reason recorded'}`,
    );
  }
  if (header.timeMicros === 0)
    report.add('warning', 'time', 'no snapshot time: the snapshot was never activated');
  return layout;
}

/**
 * Every table entry: inside the data area, below next cluster (else a torn commit's), each
 * store cluster once; entries of clusters past the origin's end must be empty; every data
 * cluster below next cluster must be mapped.
 */
async function checkTable(
  header: StoreHeader,
  layout: StoreLayout,
  source: StoreSource,
  report: Report,
): Promise<{ copied: number; torn: number }> {
  const { clusterCount, clusterSize } = layout.geometry;
  const mapped = new CopiedBitmap(header.nextCluster);
  let copied = 0;
  let torn = 0;
  for (let tableCluster = 0; tableCluster < layout.tableClusters; tableCluster++) {
    const bytes = await readCluster(
      source,
      storeClusterOffset(layout, tableStoreCluster(layout, tableCluster)),
      clusterSize,
      report,
    );
    if (bytes === undefined) return { copied, torn };
    for (let entryIndex = 0; entryIndex < layout.entriesPerTableCluster; entryIndex++) {
      const storeCluster = readTableEntry(bytes, entryIndex);
      if (storeCluster === 0) continue;
      const cluster = tableCluster * layout.entriesPerTableCluster + entryIndex;
      if (cluster >= clusterCount) {
        report.add(
          'error',
          'table',
          `an entry for cluster ${cluster}, past the origin's ${clusterCount} clusters`,
        );
      } else if (storeCluster < layout.firstDataCluster) {
        report.add(
          'error',
          'table',
          `cluster ${cluster} maps into the header or table (store cluster ${storeCluster})`,
        );
      } else if (storeCluster >= header.nextCluster) {
        torn += 1;
        report.add(
          'warning',
          'torn',
          `cluster ${cluster} maps to store cluster ${storeCluster}, at or past next cluster ${header.nextCluster}: ` +
            'left by a commit that did not complete, ignored',
        );
      } else if (mapped.has(storeCluster)) {
        report.add(
          'error',
          'duplicate',
          `store cluster ${storeCluster} is mapped twice (again by cluster ${cluster})`,
        );
      } else {
        mapped.add(storeCluster);
        copied += 1;
      }
    }
  }
  for (let storeCluster = layout.firstDataCluster; storeCluster < header.nextCluster; storeCluster++) {
    if (!mapped.has(storeCluster)) {
      report.add('error', 'unmapped', `store cluster ${storeCluster} is in use but no cluster maps to it`);
    }
  }
  return { copied, torn };
}

/** One cluster; zero past the store's end (a sparse file, a short device). */
async function readCluster(
  source: StoreSource,
  offset: number,
  clusterSize: number,
  report: Report,
): Promise<Uint8Array | undefined> {
  try {
    const bytes = await source.read(offset, clusterSize);
    if (bytes.length === clusterSize) return bytes;
    const padded = new Uint8Array(clusterSize);
    padded.set(bytes);
    return padded;
  } catch (error) {
    report.add('error', 'read', `cannot read the table at ${offset}: ${toFssError(error).message}`);
    return undefined;
  }
}
