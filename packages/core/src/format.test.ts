import { describe, expect, it } from 'vitest';
import {
  crc32,
  decodeHeader,
  encodeHeader,
  HEADER_BYTES,
  HEADER_TEXT_BYTES_MAX,
  readTableEntry,
  type StoreHeader,
  tableLocation,
  tableStoreCluster,
  writeTableEntry,
} from './format';
import { computeGeometry } from './geometry';

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
};

describe('store header, format version 1', () => {
  it('round-trips every field', () => {
    expect(decodeHeader(encodeHeader(header))).toEqual(header);
    const invalid = {
      ...header,
      state: 'invalid' as const,
      invalidReason: 'write error on backing store: ENOSPC',
    };
    expect(decodeHeader(encodeHeader(invalid))).toEqual(invalid);
  });

  it('lays the fields out little-endian at their documented offsets', () => {
    const bytes = encodeHeader(header);
    const view = new DataView(bytes.buffer);
    expect(bytes.length).toBe(HEADER_BYTES);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('FSSSTORE');
    expect(view.getUint32(8, true)).toBe(1); // version
    expect(view.getUint32(12, true)).toBe(512); // header bytes
    expect(view.getUint32(16, true)).toBe(16); // cluster shift
    expect(view.getUint32(20, true)).toBe(1); // state valid
    expect(view.getBigUint64(24, true)).toBe(BigInt(header.deviceBytes));
    expect(view.getBigUint64(48, true)).toBe(4242n);
    expect(view.getUint16(64, true)).toBe(header.originIdentity.length);
    expect(view.getUint32(508, true)).toBe(crc32(bytes.subarray(0, 508)));
  });

  it('refuses a bad magic, an unknown version and a corrupted byte with EINVAL', () => {
    const bad = encodeHeader(header);
    bad[0] = 0x58;
    expect(() => decodeHeader(bad)).toThrowError(/EINVAL: backing store header: bad magic/);
    const future = encodeHeader(header);
    new DataView(future.buffer).setUint32(8, 2, true);
    expect(() => decodeHeader(future)).toThrowError(/unsupported format version 2/);
    const flipped = encodeHeader(header);
    flipped[30] = (flipped[30] ?? 0) ^ 1;
    expect(() => decodeHeader(flipped)).toThrowError(/checksum mismatch/);
    expect(() => decodeHeader(new Uint8Array(100))).toThrowError(/only 100 bytes/);
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

describe('indirect table layout', () => {
  it('places entry c in table cluster c / (clusterSize / 4), after the header cluster', () => {
    const geometry = computeGeometry({ deviceBytes: 1 << 30, clusterSize: 512, storeBlockSize: 512 });
    expect(geometry.entriesPerTableCluster).toBe(128);
    expect(tableLocation(geometry, 0)).toEqual({ tableCluster: 0, entryIndex: 0 });
    expect(tableLocation(geometry, 127)).toEqual({ tableCluster: 0, entryIndex: 127 });
    expect(tableLocation(geometry, 128)).toEqual({ tableCluster: 1, entryIndex: 0 });
    expect(tableStoreCluster(geometry, 0)).toBe(1);
    expect(geometry.firstDataCluster).toBe(1 + geometry.tableClusters);
  });

  it('stores entries as little-endian uint32', () => {
    const cluster = new Uint8Array(16);
    writeTableEntry(cluster, 1, 0x01020304);
    expect([...cluster.subarray(4, 8)]).toEqual([4, 3, 2, 1]);
    expect(readTableEntry(cluster, 1)).toBe(0x01020304);
    expect(() => writeTableEntry(cluster, 0, 2 ** 32)).toThrow();
  });
});
