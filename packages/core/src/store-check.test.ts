import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  crc32,
  encodeHeader,
  headerFor,
  type StoreHeader,
  type StoreLayout,
  storeClusterOffset,
  storeLayout,
  tableLocation,
  writeTableEntry,
} from './format';
import { computeGeometry } from './geometry';
import { checkStore, type StoreCheck, type StoreSource } from './store-check';

/** A store laid out by hand: a 2 MiB origin in 64 KiB clusters, so data starts at cluster 2. */
function makeStore(
  entries: Array<[cluster: number, storeCluster: number]>,
  options: { nextCluster?: number; invalidReason?: string; version1?: boolean } = {},
): { bytes: Uint8Array; layout: StoreLayout; header: StoreHeader } {
  const layout = storeLayout(computeGeometry({ deviceBytes: 2 * 1024 * 1024, storeBlockSize: 4096 }));
  const nextCluster = options.nextCluster ?? layout.firstDataCluster + entries.length;
  const header = headerFor(layout, {
    timeMicros: 1_700_000_000_000_000,
    originIdentity: '/srv/disk.img',
    nextCluster,
    invalidReason: options.invalidReason,
    commitSequence: 3,
  });
  const bytes = new Uint8Array(storeClusterOffset(layout, Math.max(nextCluster, layout.firstDataCluster)));
  bytes.set(encodeHeader(header), 0);
  if (options.version1 === true) {
    const view = new DataView(bytes.buffer);
    view.setUint32(8, 1, true);
    bytes.fill(0, 448, 508);
    view.setUint32(508, crc32(bytes.subarray(0, 508)), true);
  }
  for (const [cluster, storeCluster] of entries) {
    // Past the origin's clusters tableLocation refuses; such entries are what the check must find.
    const { tableCluster, entryIndex } =
      cluster < layout.geometry.clusterCount
        ? tableLocation(layout, cluster)
        : { tableCluster: 0, entryIndex: cluster };
    const at = storeClusterOffset(layout, 1 + tableCluster);
    writeTableEntry(bytes.subarray(at, at + layout.geometry.clusterSize), entryIndex, storeCluster);
  }
  return { bytes, layout, header };
}

function source(bytes: Uint8Array, sizeBytes: number | undefined = bytes.length): StoreSource {
  return {
    sizeBytes,
    read: async (offset, length) => bytes.slice(offset, offset + length),
  };
}

function codes(check: StoreCheck, severity: 'error' | 'warning'): string[] {
  return check.findings.filter((finding) => finding.severity === severity).map((finding) => finding.code);
}

describe('checkStore', () => {
  it('finds a well-formed store clean and counts its copied clusters', async () => {
    const { bytes } = makeStore([
      [3, 2],
      [7, 3],
      [31, 4],
    ]);
    const check = await checkStore(source(bytes));
    expect(check.clean).toBe(true);
    expect(check.copiedClusters).toBe(3);
    expect(check.tornEntries).toBe(0);
    expect(codes(check, 'error')).toEqual([]);
    expect(check.header).toMatchObject({ version: 2, commitSequence: 3, clusterCount: 32 });
  });

  it('reads a version 1 store the same way', async () => {
    const check = await checkStore(source(makeStore([[1, 2]], { version1: true }).bytes));
    expect(check).toMatchObject({
      clean: true,
      copiedClusters: 1,
      header: { version: 1, commitSequence: 0 },
    });
  });

  it('says why a header is unusable: magic, checksum, no bytes at all', async () => {
    const { bytes } = makeStore([]);
    const wrongMagic = bytes.slice();
    wrongMagic[0] = 0x58;
    expect(await checkStore(source(wrongMagic))).toMatchObject({
      clean: false,
      findings: [
        {
          severity: 'error',
          code: 'header',
          message: 'backing store header: bad magic, not an fss backing store',
        },
      ],
    });
    const flipped = bytes.slice();
    flipped[40] = (flipped[40] ?? 0) ^ 0x10;
    expect((await checkStore(source(flipped))).findings[0]?.message).toMatch(/checksum mismatch/);
    expect((await checkStore(source(new Uint8Array(0)))).findings[0]?.message).toMatch(/only 0 bytes/);
  });

  it('refuses fields that contradict each other, with what they should be', async () => {
    const { layout, header } = makeStore([]);
    const cases: Array<[Partial<StoreHeader>, RegExp]> = [
      [{ clusterShift: 40 }, /cluster shift 40 is outside 9..31/],
      [{ clusterCount: 33 }, /cluster count 33, but 2097152 bytes make 32/],
      [{ tableClusters: 2 }, /table clusters 2, but the geometry needs 1/],
      [{ nextCluster: 1 }, /next cluster 1 lies inside the header and table/],
    ];
    for (const [change, message] of cases) {
      const bytes = new Uint8Array(storeClusterOffset(layout, 4));
      bytes.set(encodeHeader({ ...header, ...change }), 0);
      const check = await checkStore(source(bytes));
      expect(check.clean, JSON.stringify(change)).toBe(false);
      expect(check.findings.find((finding) => finding.severity === 'error')?.message).toMatch(message);
    }
  });

  it('finds entries into the metadata, duplicates, unmapped data and entries past the origin', async () => {
    const intoTable = await checkStore(source(makeStore([[2, 1]], { nextCluster: 3 }).bytes));
    expect(codes(intoTable, 'error')).toEqual(['table', 'unmapped']);
    const duplicate = await checkStore(
      source(
        makeStore(
          [
            [2, 2],
            [5, 2],
          ],
          { nextCluster: 3 },
        ).bytes,
      ),
    );
    expect(codes(duplicate, 'error')).toEqual(['duplicate']);
    expect(duplicate.findings.find((f) => f.code === 'duplicate')?.message).toBe(
      'store cluster 2 is mapped twice (again by cluster 5)',
    );
    const pastEnd = await checkStore(source(makeStore([[40, 2]], { nextCluster: 3 }).bytes));
    expect(codes(pastEnd, 'error')).toEqual(['table', 'unmapped']);
    const unmapped = await checkStore(source(makeStore([[0, 2]], { nextCluster: 4 }).bytes));
    expect(unmapped.findings.find((f) => f.code === 'unmapped')?.message).toBe(
      'store cluster 3 is in use but no cluster maps to it',
    );
  });

  it('warns of (and ignores) entries a torn commit left past next cluster; the store stays clean', async () => {
    const { bytes } = makeStore(
      [
        [0, 2],
        [9, 3],
      ],
      { nextCluster: 3 },
    );
    const check = await checkStore(source(bytes));
    expect(check).toMatchObject({ clean: true, copiedClusters: 1, tornEntries: 1 });
    expect(codes(check, 'warning')).toEqual(['torn']);
  });

  it('reports an invalidated snapshot and a store shorter than its header says as damaged', async () => {
    const invalid = await checkStore(
      source(makeStore([], { invalidReason: 'write error on backing store: ENOSPC' }).bytes),
    );
    expect(invalid.clean).toBe(false);
    expect(invalid.findings.find((f) => f.code === 'invalid')?.message).toBe(
      'the snapshot was invalidated: write error on backing store: ENOSPC',
    );
    const { bytes } = makeStore([[0, 2]]);
    const short = await checkStore(source(bytes, 65536 * 2));
    expect(codes(short, 'error')).toEqual(['size']);
  });

  it('never throws on a corrupted store, whatever bytes change (seeded)', async () => {
    const { bytes } = makeStore([
      [3, 2],
      [7, 3],
      [31, 4],
    ]);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.nat(bytes.length - 1), value: fc.integer({ min: 0, max: 255 }) }), {
          minLength: 1,
          maxLength: 64,
        }),
        fc.option(fc.nat(bytes.length), { nil: undefined }),
        async (changes, truncateTo) => {
          let damaged = bytes.slice();
          for (const { at, value } of changes) damaged[at] = value;
          if (truncateTo !== undefined) damaged = damaged.subarray(0, truncateTo);
          const check = await checkStore(source(damaged));
          expect(typeof check.clean).toBe('boolean');
          for (const finding of check.findings) expect(finding.message.length).toBeGreaterThan(0);
          if (damaged.length < 512) expect(check.clean).toBe(false);
        },
      ),
      { seed: 42, numRuns: 300 },
    );
  });
});
