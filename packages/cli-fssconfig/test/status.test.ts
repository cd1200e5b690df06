/**
 * `fss status`: the JSON document checked against the JSON Schema the package ships (ajv, a
 * real validator, strict) on a live daemon's output, its values against what the test did
 * (clusters written through the origin's NBD export), the moving averages moving, the store's
 * limit on a small filesystem (root), and `--watch` frames: JSON Lines parsed one by one, text
 * redrawn on a pseudo-terminal (script(1)), SIGINT ending it with exit 0.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { binArgs, isRoot, NbdClient, ROOT_REASON, Sandbox, waitFor } from '@fss/test-utils';
import { Ajv2020 } from 'ajv/dist/2020';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLEAR_SCREEN } from '../src/commands/status';
import type { StatusDocument } from '../src/status/document';

const MiB = 1024 * 1024;
const CLUSTER = 64 * 1024;
const schema = JSON.parse(readFileSync(new URL('../schema/status.schema.json', import.meta.url), 'utf8'));
const validate = new Ajv2020({ strict: true, allErrors: true }).compile(schema);
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), Buffer.alloc(8 * MiB, 0x5a));
});
afterEach(async () => {
  await sandbox.cleanup();
});

async function ok(bin: 'fssconfig' | 'fss', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args);
  expect(result.status, `${bin} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

function checked(text: string): StatusDocument {
  const document: unknown = JSON.parse(text);
  expect(validate(document), JSON.stringify(validate.errors, null, 2)).toBe(true);
  return document as StatusDocument;
}

async function statusDocument(): Promise<StatusDocument> {
  return checked(await ok('fss', ['status', '--json']));
}

/** Writes one byte pattern over each of `clusters` through the origin's read-write export. */
async function writeClusters(origin: string, clusters: number[]): Promise<void> {
  const client = await NbdClient.connect(join(sandbox.runDir, 'origin', `${origin}.sock`));
  for (const cluster of clusters) await client.write(cluster * CLUSTER, Buffer.alloc(CLUSTER, cluster));
  await client.flush();
  client.disconnect();
}

describe('fss status --json', () => {
  it('matches the shipped schema, with the values the daemon and the writes give', async () => {
    const empty = await statusDocument();
    expect(empty).toMatchObject({ schemaVersion: 1, units: [], origins: [] });
    // The schema is strict: an unknown key or a missing one fails it.
    expect(validate({ ...empty, extra: true })).toBe(false);
    expect(validate({ ...empty, daemon: { ...empty.daemon, version: undefined } })).toBe(false);
    expect(empty.daemon).toEqual({
      pid: sandbox.daemonPid(),
      runDir: sandbox.runDir,
      version: JSON.parse(readFileSync(new URL('../../fssd/package.json', import.meta.url), 'utf8')).version,
      unitCount: 16,
    });

    await ok('fssconfig', ['-c', 'fss0', 'image', 'backup']);
    const before = await statusDocument(); // the origin's rate meter starts here
    expect(before.units).toHaveLength(1);
    expect(before.units[0]).toMatchObject({ clustersCopied: 0, writeRate: 0, valid: true });
    const copied = [0, 3, 7, 100, 127];
    await writeClusters('image', [...copied, 3, 7]); // rewrites copy nothing more
    let document = await statusDocument();
    for (
      let tries = 0;
      document.units[0]?.storeBytesUsed !== (2 + copied.length) * CLUSTER && tries < 100;
      tries++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 50)); // the store is written in the background
      document = await statusDocument();
    }
    const [unit] = document.units;
    expect(unit).toMatchObject({
      name: 'fss0',
      origin: 'image',
      mount: sandbox.path('image'),
      valid: true,
      invalidReason: null,
      persistent: true,
      durability: 'process',
      unconfigOnClose: false,
      onFull: 'invalidate',
      onFullTimeoutMs: null,
      waitingForSpace: false,
      clusterSize: CLUSTER,
      clusterCount: 128,
      clustersCopied: copied.length,
      // header + one indirect-table cluster + the copied clusters
      storeBytesUsed: (2 + copied.length) * CLUSTER,
      storeBytesMax: (2 + 128) * CLUSTER,
      backup: sandbox.path('backup'),
      export: join(sandbox.runDir, 'fss0.sock'),
      device: expect.toBeOneOf([null, expect.any(String)]),
      clients: 0,
    });
    expect(Date.parse(unit?.taken ?? '')).toBeLessThanOrEqual(Date.now());
    expect(unit?.writeRate).toBeGreaterThan(0);
    // A file store on a roomy filesystem can hold every cluster: it never fills.
    expect(unit?.storeBytesLimit).toBeGreaterThan((2 + 128) * CLUSTER);
    expect(unit?.secondsToFull).toBeNull();
    expect(document.origins).toEqual([
      expect.objectContaining({
        name: 'image',
        path: sandbox.path('image'),
        size: 8 * MiB,
        explicit: false,
        units: ['fss0'],
        clients: 0,
      }),
    ]);
    expect(document.origins[0]?.writeRate).toBeGreaterThan(0);

    // The text form stays the default and says the same.
    const text = await ok('fss', ['status']);
    expect(text).toMatch(/^fssd: pid \d+, run directory /);
    expect(text).toContain(`    store 448K of `);
    expect(text).toMatch(/, \d+(\.\d+)?[BKM]\/s copied\n/);
  });

  it.skipIf(!isRoot)(
    `says when a store on a small filesystem will be full (${isRoot ? 'root' : ROOT_REASON})`,
    async () => {
      writeFileSync(sandbox.path('image'), Buffer.alloc(64 * MiB, 0x33));
      const small = sandbox.path('small');
      mkdirSync(small);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', small]);
      try {
        await ok('fssconfig', ['-c', 'fss0', 'image', join(small, 'backup')]);
        await writeClusters('image', [1, 2, 3, 4]);
        const [unit] = (await statusDocument()).units;
        expect(unit?.valid).toBe(true);
        expect(unit?.storeBytesLimit).toBeLessThanOrEqual(4 * MiB + (unit?.storeBytesUsed ?? 0));
        expect(unit?.storeBytesLimit).toBeGreaterThanOrEqual(unit?.storeBytesUsed ?? Infinity);
        expect(unit?.storeBytesMax).toBeGreaterThan(4 * MiB);
        expect(unit?.secondsToFull).toBeGreaterThan(0);
        expect(Number.isFinite(unit?.secondsToFull)).toBe(true);
        await ok('fssconfig', ['-u', 'fss0']);
      } finally {
        await sandbox.stopDaemon().catch(() => undefined);
        execFileSync('umount', ['-l', small]);
      }
    },
  );

  it('refuses bad arguments with the reason, exit 1', async () => {
    const bad = await sandbox.run('fss', ['status', '--watch', '--interval', 'soon']);
    expect(bad).toMatchObject({ status: 1, stdout: '' });
    expect(bad.stderr).toBe(
      'fss: status: Invalid argument\nfss: status: --interval soon: not a number of seconds in 0.1..86400\n',
    );
    const alone = await sandbox.run('fss', ['status', '--count', '2']);
    expect(alone.stderr).toContain('--interval and --count go with --watch');
    expect((await sandbox.run('fss', ['status', '--yaml'])).stderr).toMatch(/^usage: fss /);
  });
});

describe('fss status --watch', () => {
  it('--json prints one schema-valid document per line, --count frames', async () => {
    await ok('fssconfig', ['-c', 'fss0', 'image', 'backup']);
    const out = await ok('fss', ['status', '--watch', '--json', '--interval', '0.1', '--count', '3']);
    const frames = out.trimEnd().split('\n');
    expect(frames).toHaveLength(3);
    for (const frame of frames) expect(checked(frame).units.map((unit) => unit.name)).toEqual(['fss0']);
  });

  it('redraws text frames on a terminal (a pseudo-terminal from script(1))', async () => {
    await ok('fssconfig', ['-c', 'fss0', 'image', 'backup']);
    const command = [
      process.execPath,
      ...binArgs('fss'),
      'status',
      '--watch',
      '--interval',
      '0.1',
      '--count',
      '2',
    ]
      .map((word) => `'${word}'`)
      .join(' ');
    const screen = execFileSync('script', ['-qfec', command, '/dev/null'], {
      cwd: sandbox.dir,
      env: sandbox.env,
      encoding: 'utf8',
    });
    const frames = screen.split(CLEAR_SCREEN).slice(1);
    expect(frames).toHaveLength(2);
    for (const frame of frames) {
      expect(frame).toMatch(/^fssd: pid \d+/);
      expect(frame).toContain('fss0: ');
    }
  });

  it('ends with exit 0 on SIGINT; without a terminal, frames follow each other', async () => {
    const child = spawn(process.execPath, [...binArgs('fss'), 'status', '--watch', '--interval', '0.2'], {
      cwd: sandbox.dir,
      env: sandbox.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      out += text;
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      err += text;
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (status) => resolve(status)));
    const twoFrames = await Promise.race([
      waitFor(() => (out.match(/^fssd: /gm) ?? []).length >= 2, 30_000),
      exited.then(() => false),
    ]);
    expect(twoFrames, `fss status --watch: ${out}${err}`).toBe(true);
    child.kill('SIGINT');
    const code = await exited;
    sandbox.notePid();
    expect(code).toBe(0);
    expect(out).not.toContain(CLEAR_SCREEN);
    expect(out).toMatch(/\n\nfssd: /);
  });
});
