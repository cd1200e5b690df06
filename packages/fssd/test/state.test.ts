/**
 * The state directory's defaults and records, and the origin write lease: renewed ahead of
 * writes, waited for only when about to run out, never failing a write when it cannot be
 * recorded, and ending at the stop on a clean stop.
 */
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryBlockDevice } from '@fss/core';
import { afterEach, describe, expect, it } from 'vitest';
import { LEASE_MS, leasedDevice, WriteLease } from '../src/origin-lease';
import { defaultStateDir, StateDir, type UnitRecord } from '../src/state-dir';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('defaultStateDir', () => {
  it('FSS_STATEDIR, else /var/lib/fss as root, else XDG_STATE_HOME/fss, else ~/.local/state/fss', () => {
    expect(defaultStateDir({ FSS_STATEDIR: '/x' }, 1000)).toBe('/x');
    expect(defaultStateDir({}, 0)).toBe('/var/lib/fss');
    expect(defaultStateDir({ XDG_STATE_HOME: '/home/u/.state' }, 1000)).toBe('/home/u/.state/fss');
    expect(defaultStateDir({ XDG_STATE_HOME: 'relative' }, 1000)).toMatch(/\/\.local\/state\/fss$/);
  });
});

describe('StateDir', () => {
  const record = (unit: number): UnitRecord => ({
    version: 1,
    unit,
    mount: '/srv/image',
    clusterSize: 0,
    flags: 0,
    durability: 'process',
    origin: { name: 'image', path: '/srv/image', explicit: false, attach: false },
    store: { path: '/var/tmp/back', kind: 'file', identity: ['file:1:2'] },
    createdAt: '2026-12-02T00:00:00.000Z',
  });

  it('0700 directories, 0600 records written whole, read back by unit; junk is reported, not fatal', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fss-state-'));
    dirs.push(dir);
    const state = new StateDir(join(dir, 'state'));
    await state.prepare();
    expect(statSync(state.unitsDir).mode & 0o777).toBe(0o700);
    await state.writeUnit(record(3));
    await state.writeUnit(record(0));
    expect(statSync(state.unitPath(3)).mode & 0o777).toBe(0o600);
    writeFileSync(join(state.unitsDir, 'fss7.json'), '{"version": 1, "unit": 7, tr');
    writeFileSync(join(state.unitsDir, 'fss9.json.tmp-abcdef'), 'half a record');
    const bad: string[] = [];
    const units = await state.readUnits((path) => bad.push(path));
    expect(units.map((each) => each.unit)).toEqual([0, 3]);
    expect(bad).toEqual([join(state.unitsDir, 'fss7.json')]);
    expect(readdirSync(state.unitsDir).sort()).toEqual(['fss0.json', 'fss3.json', 'fss7.json']);
    await state.removeUnit(3);
    expect((await state.readUnits(() => undefined)).map((each) => each.unit)).toEqual([0]);
  });
});

describe('WriteLease', () => {
  it('records LEASE_MS ahead, renews in the background, makes a write wait only when nearly out', async () => {
    let now = 1_000_000;
    const persisted: number[] = [];
    const lease = new WriteLease(
      async (until) => {
        persisted.push(until);
      },
      () => undefined,
      () => now,
    );
    expect(lease.beforeWrite()).toBeUndefined(); // disabled: nothing to do
    await lease.enable();
    expect(persisted).toEqual([1_000_000 + LEASE_MS]);
    expect(lease.beforeWrite()).toBeUndefined(); // plenty left
    now += 1500; // 3.5 s left: renew, but do not wait
    expect(lease.beforeWrite()).toBeUndefined();
    await new Promise((resolve) => setImmediate(resolve));
    expect(persisted).toEqual([1_000_000 + LEASE_MS, 1_001_500 + LEASE_MS]);
    now += LEASE_MS - 500; // 0.5 s left: the write waits for the renewal
    const wait = lease.beforeWrite();
    expect(wait).toBeInstanceOf(Promise);
    await wait;
    now += 10;
    await lease.settle();
    expect(persisted.at(-1)).toBe(now);
  });

  it('a lease that cannot be recorded never fails or blocks writes; the device keeps its capabilities', async () => {
    const lines: string[] = [];
    const lease = new WriteLease(
      () => Promise.reject(new Error('ENOSPC')),
      (line) => lines.push(line),
    );
    await lease.enable();
    expect(lines[0]).toMatch(/not recorded: Error: ENOSPC/);
    const memory = new MemoryBlockDevice(8192);
    const device = leasedDevice(memory, lease);
    await device.write(new Uint8Array(4096).fill(5), 4096);
    expect(memory.bytes[4096]).toBe(5);
    expect(device.writeZeroes).toBeDefined();
    expect(device.discard === undefined).toBe(memory.discard === undefined);
    await device.writeZeroes?.(4096, 4096);
    expect(memory.bytes[4096]).toBe(0);
    expect(device.size).toBe(8192);
  });
});
