/**
 * Writes that bypass fss (issue 11, bypass-watch.ts): a loop device attached to an origin
 * image, or another process with the image open for writing, makes every snapshot of that
 * origin invalid with the reason, logged once per unit; a reader, and fssd's own writes
 * through the origin export, do not.
 *
 * Real fssd processes from sources (Sandbox), checking every CHECK_MS (FSS_BYPASS_CHECK_MS).
 * The cost of one check is measured in-process and logged (`bypass check cost: …`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { storageIdentity } from '@fss/blockdev-linux';
import { attachLoop, detach, NbdClient, pattern, Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BypassWatch, FULL_SCAN_EVERY } from '../src/bypass-watch';

const MiB = 1024 * 1024;
const CHECK_MS = 200;
const isRoot = process.getuid?.() === 0;

let sandbox: Sandbox;
const children: ChildProcess[] = [];

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), pattern(8 * MiB, 3));
});
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  await sandbox.cleanup();
});

const env = (): NodeJS.ProcessEnv => ({ ...sandbox.env, FSS_BYPASS_CHECK_MS: String(CHECK_MS) });

async function ok(bin: 'fssconfig' | 'fss', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args, { env: env() });
  expect(result.status, `${bin} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

interface Unit {
  name: string;
  valid: boolean;
  invalidReason: string | null;
}

async function fss0(): Promise<Unit> {
  const status = JSON.parse(await ok('fss', ['status', '--json'])) as { units: Unit[] };
  return status.units.find((unit) => unit.name === 'fss0') as Unit;
}

/** fss0 once it is invalid, or as it is after `timeoutMs`. */
async function invalidWithin(timeoutMs: number): Promise<Unit> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const unit = await fss0();
    if (unit.valid === false || Date.now() > deadline) return unit;
    await new Promise((resolve) => setTimeout(resolve, CHECK_MS));
  }
}

function invalidLines(): string[] {
  const log = readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8');
  return log.split('\n').filter((line) => line.includes('fss0: snapshot invalid:'));
}

/** A child holding the image open: `mode` r (reader), r+ (writer), w1 (writes one byte, holds). */
async function holder(mode: 'r' | 'r+' | 'w1'): Promise<ChildProcess> {
  const script =
    "const fs = require('fs');" +
    `const fd = fs.openSync(process.argv[1], '${mode === 'r' ? 'r' : 'r+'}');` +
    (mode === 'w1' ? "fs.writeSync(fd, Buffer.from('x'), 0, 1, 0);" : '') +
    "console.log('open'); setInterval(() => {}, 1000);";
  const child = spawn(process.execPath, ['-e', script, sandbox.path('image')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
  });
  return child;
}

async function expectInvalidOnce(reason: RegExp): Promise<void> {
  const unit = await invalidWithin(FULL_SCAN_EVERY * CHECK_MS + 5000);
  expect(unit).toMatchObject({ valid: false });
  expect(unit.invalidReason).toMatch(reason);
  // Later checks find the origin without a valid snapshot: nothing more is logged.
  await new Promise((resolve) => setTimeout(resolve, 4 * CHECK_MS));
  expect(invalidLines()).toHaveLength(1);
  expect(invalidLines()[0]).toMatch(reason);
}

const outside = (path: string): string => `origin ${path} is written outside fss: `;
const literal = (text: string): string => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

describe.skipIf(!isRoot)('a loop device over the origin image (root)', () => {
  it('makes fss0 invalid naming the loop device, logged once', async () => {
    await ok('fssconfig', ['-c', 'fss0', 'image', 'backup']);
    expect(await fss0()).toMatchObject({ valid: true });
    const loop = attachLoop(['-f', '--show', sandbox.path('image')]);
    try {
      await expectInvalidOnce(
        new RegExp(`${literal(outside(sandbox.path('image')))}loop device ${literal(loop)} is backed by it`),
      );
    } finally {
      detach(loop);
    }
  }, 60_000);
});

describe('another process with the origin image open for writing', () => {
  it('one that wrote and holds it makes fss0 invalid naming its pid, logged once', async () => {
    await ok('fssconfig', ['-c', 'fss0', 'image', 'backup']);
    expect(await fss0()).toMatchObject({ valid: true });
    const child = await holder('w1');
    await expectInvalidOnce(
      new RegExp(
        `${literal(outside(sandbox.path('image')))}process ${child.pid} \\(node\\) has it open for writing`,
      ),
    );
  }, 60_000);

  it('one that only holds it (bash exec 3<>image) is found by the periodic full scan', async () => {
    await ok('fssconfig', ['-c', 'fss0', 'image', 'backup']);
    // Past the first check's scan, so only the periodic one can find it.
    await new Promise((resolve) => setTimeout(resolve, 3 * CHECK_MS));
    const child = spawn('bash', ['-c', 'exec 3<>image; echo open; exec sleep 60'], {
      cwd: sandbox.dir,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    await new Promise((resolve) => child.stdout?.once('data', resolve));
    await expectInvalidOnce(new RegExp(`process ${child.pid} \\(sleep\\) has it open for writing`));
  }, 60_000);
});

describe('no false positives', () => {
  it('a reader, and fssd’s own writes through the origin export, leave fss0 valid', async () => {
    await ok('fssconfig', ['-c', 'fss0', 'image', 'backup']);
    await holder('r');
    const client = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
    try {
      for (let at = 0; at < 4 * MiB; at += 256 * 1024) await client.write(at, pattern(256 * 1024, at));
      await client.flush();
      // Every write moved the image's ctime: the checks after it scanned the processes.
      await new Promise((resolve) => setTimeout(resolve, 4 * CHECK_MS));
      for (let at = 4 * MiB; at < 6 * MiB; at += 256 * 1024) await client.write(at, pattern(256 * 1024, at));
      await new Promise((resolve) => setTimeout(resolve, 4 * CHECK_MS));
    } finally {
      client.disconnect();
    }
    expect(await fss0()).toMatchObject({ valid: true });
    expect(invalidLines()).toEqual([]);
    // The watch was running all along: a writer now is found.
    const child = await holder('w1');
    await expectInvalidOnce(new RegExp(`process ${child.pid} \\(node\\) has it open for writing`));
  }, 60_000);
});

describe('the cost of a check', () => {
  it('is measured: a check without writes since the last scan, and a full scan', async () => {
    const path = sandbox.path('image');
    const origin = { name: 'image', path, identity: await storageIdentity(path) };
    const reasons: string[] = [];
    const watch = new BypassWatch({
      intervalMs: 3_600_000, // only the checks below run
      wanted: () => true,
      onBypass: (_origin, reason) => reasons.push(reason),
      log: () => undefined,
    });
    watch.add(origin);
    try {
      const measure = async (
        touch: boolean,
      ): Promise<{ cpuUs: number; wallUs: number; scanned: boolean }> => {
        const rounds = 20;
        let cpu = 0;
        let wall = 0;
        let scanned = true;
        for (let round = 0; round < rounds; round++) {
          if (touch) utimesSync(path, new Date(), new Date(Date.now() - round * 1000)); // moves ctime
          const cpu0 = process.cpuUsage();
          const wall0 = performance.now();
          const result = await watch.check();
          wall += performance.now() - wall0;
          const used = process.cpuUsage(cpu0);
          cpu += used.user + used.system;
          if (round > 0) scanned &&= result.scanned === touch;
        }
        return { cpuUs: Math.round(cpu / rounds), wallUs: Math.round((wall * 1000) / rounds), scanned };
      };
      await watch.check(); // first check: the full scan of a newly wanted origin
      const full = await measure(true);
      const gated = await measure(false);
      expect(full.scanned && gated.scanned).toBe(true);
      const pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
      const descriptors = pids.reduce((sum, pid) => {
        try {
          return sum + readdirSync(`/proc/${pid}/fd`).length;
        } catch {
          return sum;
        }
      }, 0);
      console.log(
        `bypass check cost: ${pids.length} processes, ${descriptors} descriptors: ` +
          `check without writes since the last scan ${gated.cpuUs} µs CPU (${gated.wallUs} µs wall), ` +
          `full process scan ${full.cpuUs} µs CPU (${full.wallUs} µs wall), per origin per check`,
      );
      expect(reasons).toEqual([]); // this test process is "fssd" here, and nothing else writes it
    } finally {
      watch.stop();
    }
  }, 60_000);
});
