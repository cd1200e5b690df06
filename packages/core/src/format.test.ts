import { describe, expect, it } from 'vitest';
import {
  crc32,
  decodeHeader,
  encodeHeader,
  encodeHeaderBlock,
  HEADER_BYTES,
  HEADER_TEXT_BYTES_MAX,
  headerFor,
  metadataBytes,
  netbsdClustersInUse,
  readTableCluster,
  readTableEntry,
  type StoreHeader,
  storeLayout,
  tableClustersFor,
  tableLocation,
  tableStoreCluster,
  writeTableCluster,
  writeTableEntry,
} from './format';
import { computeGeometry } from './geometry';
import { MemoryBackingStore } from './memory';

const header: StoreHeader = {
  clusterShift: 16,
  state: 'valid',
  deviceBytes: 2 ** 40 + 12345,
  clusterCount: 16777217,
  tableClusters: 1025,
  nextCluster: 4242,
  timeMicros: 1_795_000_000_123_456,
  originIdentity: '/dev/loop7 (7:7)',
  invalidReason: '',
  commitSequence: 77,
  flags: 1,
};

describe('store header, format version 2', () => {
  it('round-trips every field', () => {
    expect(decodeHeader(encodeHeader(header))).toEqual({ ...header, version: 2 });
    const invalid = {
      ...header,
      state: 'invalid' as const,
      invalidReason: 'write error on backing store: ENOSPC',
    };
    expect(decodeHeader(encodeHeader(invalid))).toEqual({ ...invalid, version: 2 });
  });

  it('lays the fields out little-endian at their documented offsets', () => {
    const bytes = encodeHeader(header);
    const view = new DataView(bytes.buffer);
    expect(bytes.length).toBe(HEADER_BYTES);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('FSSSTORE');
    expect(view.getUint32(8, true)).toBe(2); // version
    expect(view.getUint32(12, true)).toBe(512); // header bytes
    expect(view.getUint32(16, true)).toBe(16); // cluster shift
    expect(view.getUint32(20, true)).toBe(1); // state valid
    expect(view.getBigUint64(24, true)).toBe(BigInt(header.deviceBytes));
    expect(view.getBigUint64(48, true)).toBe(4242n);
    expect(view.getUint16(64, true)).toBe(header.originIdentity.length);
    expect(view.getBigUint64(448, true)).toBe(77n); // commit sequence
    expect(view.getUint32(456, true)).toBe(1); // flags
    expect(view.getUint32(508, true)).toBe(crc32(bytes.subarray(0, 508)));
  });

  it('refuses a bad magic, an unknown version and a corrupted byte with EINVAL', () => {
    const bad = encodeHeader(header);
    bad[0] = 0x58;
    expect(() => decodeHeader(bad)).toThrowError(/EINVAL: backing store header: bad magic/);
    const future = encodeHeader(header);
    new DataView(future.buffer).setUint32(8, 3, true);
    expect(() => decodeHeader(future)).toThrowError(/unsupported format version 3/);
    const flipped = encodeHeader(header);
    flipped[30] = (flipped[30] ?? 0) ^ 1;
    expect(() => decodeHeader(flipped)).toThrowError(/checksum mismatch/);
    expect(() => decodeHeader(new Uint8Array(100))).toThrowError(/only 100 bytes/);
  });

  it('reads a version 1 header (written before commit sequences) as commit sequence 0, no flags', () => {
    // A v1 header is a v2 header with version 1, zeroes where v2 added fields, and its own CRC.
    const bytes = encodeHeader(header);
    const view = new DataView(bytes.buffer);
    view.setUint32(8, 1, true);
    bytes.fill(0, 448, 508);
    view.setUint32(508, crc32(bytes.subarray(0, 508)), true);
    expect(decodeHeader(bytes)).toEqual({ ...header, commitSequence: 0, flags: 0, version: 1 });
  });

  it('cuts long texts at a UTF-8 character boundary', () => {
    const long = 'é'.repeat(200); // 400 bytes of 2-byte characters
    const decoded = decodeHeader(encodeHeader({ ...header, originIdentity: long }));
    expect(decoded.originIdentity).toBe('é'.repeat(HEADER_TEXT_BYTES_MAX / 2));
  });

  it('computes the standard CRC-32', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });
});

describe('store layout', () => {
  it('sizes the table as ((count * 4) >> shift) + 1, with the +1 on exact multiples too', () => {
    expect(tableClustersFor(100, 9)).toBe(1); // 400 bytes
    expect(tableClustersFor(128, 9)).toBe(2); // exactly 512 bytes
    expect(tableClustersFor(129, 9)).toBe(2);
    expect(tableClustersFor(16384, 16)).toBe(2); // exactly 64 KiB
  });

  it("lays out t_fss's 2 MiB image as fss does: 1 table cluster after our header, data from 2", () => {
    const layout = storeLayout(computeGeometry({ deviceBytes: 2 * 1024 * 1024, storeBlockSize: 4096 }));
    expect(layout).toMatchObject({ tableClusters: 1, firstDataCluster: 2, entriesPerTableCluster: 16384 });
    expect(metadataBytes(layout)).toBe(2 * 65536);
    expect(netbsdClustersInUse(layout.firstDataCluster)).toBe(1); // NetBSD's fresh sc_clnext
  });

  it('places entry c in table cluster c / (clusterSize / 4), after the header cluster', () => {
    const layout = storeLayout(
      computeGeometry({ deviceBytes: 1 << 30, clusterSize: 512, storeBlockSize: 512 }),
    );
    expect(layout.entriesPerTableCluster).toBe(128);
    expect(tableLocation(layout, 0)).toEqual({ tableCluster: 0, entryIndex: 0 });
    expect(tableLocation(layout, 127)).toEqual({ tableCluster: 0, entryIndex: 127 });
    expect(tableLocation(layout, 128)).toEqual({ tableCluster: 1, entryIndex: 0 });
    expect(tableStoreCluster(layout, 0)).toBe(1);
    expect(layout.firstDataCluster).toBe(1 + layout.tableClusters);
  });

  it('reads a never-written table cluster as zeroes without touching the store', async () => {
    const layout = storeLayout(
      computeGeometry({ deviceBytes: 1 << 20, clusterSize: 512, storeBlockSize: 512 }),
    );
    const store = new MemoryBackingStore();
    const junk = new Uint8Array(512).fill(0xee); // what a raw device may hold there
    await store.write(junk, 512);
    const target = new Uint8Array(512).fill(1);
    await readTableCluster(store, layout, 0, false, target);
    expect(target.every((byte) => byte === 0)).toBe(true);
    await readTableCluster(store, layout, 0, true, target);
    expect(target.every((byte) => byte === 0xee)).toBe(true);
    await writeTableCluster(store, layout, 1, new Uint8Array(512).fill(7));
    await readTableCluster(store, layout, 1, true, target);
    expect(target.every((byte) => byte === 7)).toBe(true);
  });

  it('builds the header of a layout, valid or invalid, padded to the store block', () => {
    const layout = storeLayout(computeGeometry({ deviceBytes: 3 << 20, storeBlockSize: 4096 }));
    const valid = headerFor(layout, { timeMicros: 5, originIdentity: 'img', nextCluster: 2 });
    expect(valid).toMatchObject({ state: 'valid', invalidReason: '', clusterCount: 48, tableClusters: 1 });
    const invalid = headerFor(layout, {
      timeMicros: 5,
      originIdentity: 'img',
      nextCluster: 9,
      invalidReason: 'ENOSPC',
    });
    expect(invalid).toMatchObject({ state: 'invalid', invalidReason: 'ENOSPC', nextCluster: 9 });
    const block = encodeHeaderBlock(invalid, 4096);
    expect(block.length).toBe(4096);
    expect(decodeHeader(block)).toEqual({ ...invalid, version: 2 });
    expect(block.subarray(HEADER_BYTES).every((byte) => byte === 0)).toBe(true);
    expect(() => headerFor(layout, { timeMicros: 0, originIdentity: '', nextCluster: 1 })).toThrow(
      /after the table/,
    );
  });

  it('stores entries as little-endian uint32', () => {
    const cluster = new Uint8Array(16);
    writeTableEntry(cluster, 1, 0x01020304);
    expect([...cluster.subarray(4, 8)]).toEqual([4, 3, 2, 1]);
    expect(readTableEntry(cluster, 1)).toBe(0x01020304);
    expect(() => writeTableEntry(cluster, 0, 2 ** 32)).toThrow();
  });
});
