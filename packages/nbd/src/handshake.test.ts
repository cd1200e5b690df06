import { MemoryBlockDevice } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { describeExport } from './export';
import { findExport, parseInfoRequest, parseMetaContextRequest } from './handshake';

function u32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(value, 0);
  return bytes;
}

describe('option data parsers', () => {
  it('parses INFO/GO data and rejects lengths that disagree with it', () => {
    const good = Buffer.concat([u32(4), Buffer.from('fss0'), Buffer.from([0, 2, 0, 3, 0, 1])]);
    expect(parseInfoRequest(good)).toEqual({ name: 'fss0', infos: [3, 1] });
    expect(parseInfoRequest(good.subarray(0, good.length - 1))).toBeUndefined();
    expect(parseInfoRequest(Buffer.concat([good, Buffer.from([0])]))).toBeUndefined();
    expect(
      parseInfoRequest(Buffer.concat([u32(99), Buffer.from('fss0'), Buffer.from([0, 0])])),
    ).toBeUndefined();
    expect(parseInfoRequest(Buffer.concat([u32(0), Buffer.from([0, 0])]))).toEqual({ name: '', infos: [] });
  });

  it('parses meta-context data and rejects lengths that disagree with it', () => {
    const query = Buffer.from('base:allocation');
    const good = Buffer.concat([u32(0), u32(1), u32(query.length), query]);
    expect(parseMetaContextRequest(good)).toEqual({ name: '', queries: ['base:allocation'] });
    expect(parseMetaContextRequest(good.subarray(0, good.length - 1))).toBeUndefined();
    expect(parseMetaContextRequest(Buffer.concat([good, Buffer.from([1])]))).toBeUndefined();
    expect(parseMetaContextRequest(Buffer.concat([u32(0), u32(5)]))).toBeUndefined();
  });
});

describe('findExport', () => {
  const exports = [
    describeExport({ name: 'origin', device: new MemoryBlockDevice(4096) }),
    describeExport({ name: 'fss0', device: new MemoryBlockDevice(4096, { readOnly: true }) }),
  ];
  it('serves the first export under the empty name and each under its own name', () => {
    expect(findExport(exports, '')).toBe(exports[0]);
    expect(findExport(exports, 'fss0')).toBe(exports[1]);
    expect(findExport(exports, 'FSS0')).toBeUndefined();
  });
});
