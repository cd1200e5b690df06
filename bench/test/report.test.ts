/**
 * The table and the results file: what a reader of README's Performance section and of
 * bench/results/latest.json sees.
 */
import { describe, expect, it } from 'vitest';
import { parseSizeBytes, readConfig } from '../lib/config';
import { fixedRow, type Row } from '../lib/measure';
import { formatRatio, formatTable, formatTarget, formatValue, toDocument } from '../lib/report';
import { fioArgs, parseFioOutput } from '../lib/workloads';

const row: Row = fixedRow({
  group: 'origin writes',
  name: '1 snapshot, first touch (nbdcopy)',
  ours: 140.4,
  baseline: 894.2,
  baselineLabel: 'qemu-nbd',
  unit: 'MiB/s',
  better: 'higher',
  target: 0.3,
});

describe('formatting', () => {
  it('prints values with a precision that suits their size', () => {
    expect(formatValue(1234.5)).toBe('1235');
    expect(formatValue(12.34)).toBe('12.3');
    expect(formatValue(1.234)).toBe('1.23');
    expect(formatValue(Number.NaN)).toBe('–');
    expect(formatRatio(0.157)).toBe('0.16×');
    expect(formatTarget({ target: 0.3, better: 'higher' })).toBe('≥ 0.30×');
    expect(formatTarget({ target: 1, better: 'lower' })).toBe('≤ 1.00×');
    expect(formatTarget({ target: null, better: 'higher' })).toBe('');
  });

  it('makes one Markdown table row per result, marking misses', () => {
    const table = formatTable([row]).split('\n');
    expect(table).toHaveLength(3);
    expect(table[0]).toBe(
      '| group | scenario | fss | baseline | baseline is | unit | ratio | target | met |',
    );
    expect(table[2]).toBe(
      '| origin writes | 1 snapshot, first touch (nbdcopy) | 140 | 894 | qemu-nbd | MiB/s | 0.16× | ≥ 0.30× | **no** |',
    );
  });
});

describe('toDocument', () => {
  it('has the issue shape {machine, date, scenarios:[{name, ours, baseline, unit, ratio, target}]}', () => {
    const document = toDocument({
      machine: {
        hostname: 'h',
        cpu: 'c',
        cpuCount: 2,
        memoryGiB: 24,
        kernel: 'k',
        node: 'v20',
        tools: {},
        medium: 'loop',
        scratchDir: '/dev/shm/x',
        commit: 'abc',
      },
      date: new Date('2026-12-01T00:00:00Z'),
      durationSeconds: 600.4,
      config: { rounds: 3 },
      rows: [row, { ...row, name: 'failed one', ratio: Number.NaN, ours: Number.NaN, error: 'boom' }],
    });
    expect(document.date).toBe('2026-12-01T00:00:00.000Z');
    expect(document.durationSeconds).toBe(600);
    expect(document.scenarios[0]).toMatchObject({
      name: '1 snapshot, first touch (nbdcopy)',
      ours: 140.4,
      baseline: 894.2,
      unit: 'MiB/s',
      ratio: 0.157,
      target: 0.3,
      met: false,
    });
    // JSON has no NaN: failed figures are null, and survive a round trip.
    const reparsed = JSON.parse(JSON.stringify(document)) as typeof document;
    expect(reparsed.scenarios[1]!.ratio).toBeNull();
    expect(reparsed.scenarios[1]!.error).toBe('boom');
  });
});

describe('config', () => {
  it('parses sizes with base-1024 suffixes', () => {
    expect(parseSizeBytes('4096', 'x')).toBe(4096);
    expect(parseSizeBytes('256M', 'x')).toBe(256 * 2 ** 20);
    expect(parseSizeBytes('1g', 'x')).toBe(2 ** 30);
    expect(parseSizeBytes('1TiB', 'x')).toBe(2 ** 40);
    expect(() => parseSizeBytes('1.5G', 'FSS_BENCH_SIZE')).toThrow(/FSS_BENCH_SIZE/);
  });

  it('defaults to 3 rounds of 1 GiB images, writes of a quarter image and a 1 TiB scale origin', () => {
    const config = readConfig({});
    expect(config.rounds).toBe(3);
    expect(config.imageBytes).toBe(2 ** 30);
    expect(config.writeBytes).toBe(2 ** 28);
    expect(config.scaleOriginBytes).toBe(2 ** 40);
    expect(config.only).toBeUndefined();
  });

  it('refuses writes larger than the image and unknown media', () => {
    expect(() => readConfig({ FSS_BENCH_SIZE: '64M', FSS_BENCH_WRITE_SIZE: '128M' })).toThrow(/WRITE_SIZE/);
    expect(() => readConfig({ FSS_BENCH_MEDIUM: 'nvme' })).toThrow(/MEDIUM/);
    expect(() => readConfig({ FSS_BENCH_ROUNDS: '0' })).toThrow(/ROUNDS/);
  });
});

describe('fio', () => {
  it('drives an export through the nbd engine and flushes writes at the end', () => {
    const args = fioArgs({
      target: { kind: 'nbd', socketPath: '/run/x/origin/bench.sock' },
      rw: 'write',
      blockBytes: 1 << 20,
      queueDepth: 16,
      sizeBytes: 1 << 28,
    });
    expect(args).toContain('--ioengine=nbd');
    expect(args).toContain('--uri=nbd+unix:///?socket=/run/x/origin/bench.sock');
    expect(args).toContain('--end_fsync=1');
    expect(args).toContain('--iodepth=16');
    expect(args).not.toContain('--time_based');
  });

  it('drives a device with libaio and direct I/O, time-based with a ramp when asked', () => {
    const args = fioArgs({
      target: { kind: 'device', path: '/dev/loop3' },
      rw: 'read',
      blockBytes: 1 << 20,
      queueDepth: 1,
      sizeBytes: 1 << 30,
      seconds: 2,
    });
    expect(args).toEqual(
      expect.arrayContaining(['--ioengine=libaio', '--direct=1', '--time_based', '--runtime=2s']),
    );
    expect(args).not.toContain('--end_fsync=1');
  });

  it('reads bandwidth and IOPS from JSON that follows a log line', () => {
    const stdout = `fio: connected to NBD server\n${JSON.stringify({
      jobs: [{ error: 0, read: { bw_bytes: 0, iops: 0 }, write: { bw_bytes: 512 * 2 ** 20, iops: 512 } }],
    })}`;
    expect(parseFioOutput(stdout, 'write')).toEqual({ mibPerSecond: 512, iops: 512 });
    expect(() => parseFioOutput('no json', 'write')).toThrow(/no JSON/);
  });
});
