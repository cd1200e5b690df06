/**
 * Real devices that fail, through the real daemon (issue 11, item 1): the device is a loop
 * device over a FUSE file this test process serves (@fss/fuse) from an in-memory device it
 * can make fail at will, so the errors fssd sees are the kernel's EIO from a real block
 * device, with no device-mapper.
 *
 * - A backing store (raw device) that starts answering EIO half way through a write load on
 *   the origin export: every origin write is acknowledged and lands (the image equals the
 *   model), the unit turns invalid once (`fss0: snapshot invalid: write error on backing
 *   store: …`), its export answers reads with an NBD error, `-l` lists it, `-u` works.
 * - An origin (a raw device) whose reads of one cluster fail while a copy needs them: only
 *   the origin write that needed that copy fails (an NBD error, its data not written), a
 *   write elsewhere at the same time lands, the snapshot stays valid, and once the device
 *   reads again the same write succeeds and the snapshot still has the old data.
 *
 * The test process serves the FUSE files, so it never touches them or their loop devices
 * itself (packages/fuse/test/helpers.ts says why): fssd and the CLI are other processes.
 * Root only (mount, loop ioctls, /dev/fuse); CI runs as root.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { type BlockDevice, FaultyBlockDevice, FssError, MemoryBlockDevice } from '@fss/core';
import { type AttachedBlockDevice, attachBlockDevice } from '@fss/fuse';
import { NbdClient, pattern, Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const CLUSTER = 64 * 1024;
const canServe = process.getuid?.() === 0 && existsSync('/dev/fuse');

let sandbox: Sandbox;
const attached: AttachedBlockDevice[] = [];

beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  // The daemon first: it holds the loop devices open.
  await sandbox.stopDaemon().catch(() => undefined);
  for (const device of attached.splice(0)) await device.close();
  await sandbox.cleanup();
});

async function ok(bin: 'fssconfig' | 'fss', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args);
  expect(result.status, `${bin} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

/** `device` as a kernel block device (/dev/loopN over a FUSE file served here). */
async function serve(device: BlockDevice, name: string): Promise<string> {
  const mountPoint = sandbox.path(`fuse-${name}`);
  await mkdir(mountPoint);
  const served = await attachBlockDevice(device, { mountPoint });
  attached.push(served);
  return served.loop.path;
}

/** A device whose reads of one byte range fail with EIO while `failing` is set. */
class FailingRangeDevice extends MemoryBlockDevice {
  failing: { offset: number; length: number } | undefined;
  failedReads = 0;

  override async read(target: Uint8Array, offset: number): Promise<number> {
    const range = this.failing;
    if (
      range !== undefined &&
      offset < range.offset + range.length &&
      range.offset < offset + target.length
    ) {
      this.failedReads += 1;
      throw new FssError('EIO', 'injected read error', { syscall: 'read' });
    }
    return super.read(target, offset);
  }
}

interface UnitStatus {
  name: string;
  valid: boolean;
  invalidReason: string | null;
}

async function unitStatus(): Promise<UnitStatus> {
  const status = JSON.parse(await ok('fss', ['status', '--json'])) as { units: UnitStatus[] };
  return status.units.find((unit) => unit.name === 'fss0') as UnitStatus;
}

describe.skipIf(!canServe)('devices that fail (root: loop devices over FUSE files served here)', () => {
  it('a store that starts answering EIO: every origin write lands, the unit turns invalid once, -l lists it, -u works', async () => {
    const imageBytes = 16 * MiB;
    writeFileSync(sandbox.path('image'), pattern(imageBytes, 4));
    const store = new FaultyBlockDevice(new MemoryBlockDevice(32 * MiB));
    const storeDevice = await serve(store, 'store');
    await ok('fssconfig', ['-c', 'fss0', sandbox.path('image'), storeDevice]);
    const client = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
    const model = pattern(imageBytes, 11);
    const chunk = 256 * 1024;
    const writes: Promise<void>[] = [];
    for (let at = 0; at < imageBytes; at += chunk) {
      // Half way through, every write to the store fails from now on.
      if (at === imageBytes / 2) store.faults.update({ writeErrorRatio: 1 });
      writes.push(client.write(at, model.subarray(at, at + chunk)));
      if (writes.length >= 8) await writes.shift();
    }
    await Promise.all(writes); // every write acknowledged: none rejected
    await client.flush();
    client.disconnect();
    expect(store.faults.faultsInjected).toBeGreaterThan(0);
    expect(Buffer.compare(readFileSync(sandbox.path('image')), model)).toBe(0);
    const unit = await unitStatus();
    expect(unit).toMatchObject({ name: 'fss0', valid: false });
    expect(unit.invalidReason).toMatch(/^write error on backing store: /);
    const reader = await NbdClient.connect(join(sandbox.runDir, 'fss0.sock'));
    await expect(reader.read(0, 4096)).rejects.toMatchObject({ nbdError: expect.any(Number) });
    reader.disconnect();
    expect(await ok('fssconfig', ['-l', 'fss0'])).toBe(`fss0: ${sandbox.path('image')}\n`);
    const log = readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8');
    expect(log.match(/fss0: snapshot invalid: write error on backing store: /g)).toHaveLength(1);
    await ok('fssconfig', ['-u', 'fss0']);
    expect(await ok('fssconfig', ['-l', 'fss0'])).toBe('fss0: not in use\n');
  }, 120_000);

  it('an origin read error during a copy fails only the origin write that needed it', async () => {
    const originBytes = 8 * MiB;
    const before = pattern(originBytes, 6);
    const device = new FailingRangeDevice(originBytes);
    device.bytes.set(before);
    const originDevice = await serve(device, 'origin');
    await ok('fss', ['origin', 'add', originDevice, '--name', 'failing']);
    await ok('fssconfig', ['-c', 'fss0', originDevice, sandbox.path('backup')]);
    const client = await NbdClient.connect(join(sandbox.runDir, 'origin', 'failing.sock'));
    const bad = 5 * CLUSTER; // its copy cannot be read
    const good = 40 * CLUSTER;
    device.failing = { offset: bad, length: CLUSTER };
    const [failed, landed] = await Promise.allSettled([
      client.write(bad + 512, new Uint8Array(4096).fill(0xaa)),
      client.write(good, new Uint8Array(4096).fill(0xbb)),
    ]);
    expect(failed).toMatchObject({ status: 'rejected', reason: { nbdError: 5 } }); // NBD_EIO
    expect(landed.status).toBe('fulfilled');
    expect(device.failedReads).toBeGreaterThan(0);
    // The failed write was not issued; the other one is on the device.
    expect(
      Buffer.compare(device.bytes.subarray(bad, bad + CLUSTER), before.subarray(bad, bad + CLUSTER)),
    ).toBe(0);
    expect(device.bytes.subarray(good, good + 4096).every((byte) => byte === 0xbb)).toBe(true);
    expect((await unitStatus()).valid).toBe(true);
    // The device reads again: the same write copies and lands; the snapshot keeps the old data.
    device.failing = undefined;
    await client.write(bad + 512, new Uint8Array(4096).fill(0xaa));
    await client.flush();
    client.disconnect();
    expect(device.bytes.subarray(bad + 512, bad + 512 + 4096).every((byte) => byte === 0xaa)).toBe(true);
    const reader = await NbdClient.connect(join(sandbox.runDir, 'fss0.sock'));
    const snapshot = Buffer.concat([await reader.read(0, 4 * MiB), await reader.read(4 * MiB, 4 * MiB)]);
    reader.disconnect();
    expect(Buffer.compare(snapshot, before)).toBe(0);
    expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).not.toMatch(/snapshot invalid/);
    await ok('fssconfig', ['-u', 'fss0']);
    await ok('fss', ['origin', 'rm', 'failing']);
  }, 120_000);
});
