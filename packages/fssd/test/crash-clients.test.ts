/**
 * fssd killed (SIGKILL) under a write load from stock NBD clients (issue 11, item 2): qemu-io
 * and fio's nbd engine write through the origin export while a persistent unit is
 * configured; the daemon is killed once some writes were acknowledged.
 *
 * - Every write acknowledged before the kill is on the image, checked one by one against
 *   the client's own log of acknowledgements: qemu-io's `wrote … at offset N` lines (each
 *   printed once the NBD reply came), fio's completion latency log with offsets
 *   (`write_lat_log` + `log_offset`; fio writes each block as its offset repeated,
 *   `verify_pattern=%o`, so the block says which write it is).
 * - The client is not left hanging: it ends on its own with an error.
 * - The next start (on demand) clears what the killed daemon left by itself: the stale
 *   sockets answer again, the image is claimed again, fss0 comes back and reads exactly the
 *   image as it was at `-c`; as root the origin is attached (--attach), and afterwards the
 *   only loop devices and FUSE mounts in the sandbox are those the new daemon reports.
 *
 * The kill is triggered by progress, not by time (the load's speed differs between machines).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { SeededRandom } from '@fss/core';
import { hasProgram, NbdClient, pattern, Sandbox, waitFor } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;
const IMAGE_BYTES = 16 * MiB;
const canAttach = process.getuid?.() === 0 && existsSync('/dev/fuse');

let sandbox: Sandbox;
const children: ChildProcess[] = [];

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), pattern(IMAGE_BYTES, 21));
});
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  await sandbox.stopDaemon().catch(() => undefined);
  // A test that failed between the kill and the restart leaves the killed daemon's devices.
  if (canAttach) releaseSandboxDevices();
  await sandbox.cleanup();
});

async function ok(bin: 'fssconfig' | 'fss', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args);
  expect(result.status, `${bin} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

const originSocket = () => join(sandbox.runDir, 'origin', 'image.sock');
const nbdUri = () => `nbd+unix:///?socket=${originSocket()}`;

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Starts a client program; `finished` settles when it exits (or rejects after `timeoutMs`: a hang). */
function startClient(
  command: string,
  args: string[],
  onStdout: (text: string) => void = () => undefined,
  timeoutMs = 60_000,
): { finished: Promise<Finished> } {
  const child = spawn(command, args, { cwd: sandbox.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
    onStdout(stdout);
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  const finished = new Promise<Finished>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} hung after the kill`)), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return { finished };
}

/** The configured daemon with fss0 persistent on the image; as root the origin is attached. */
async function configure(): Promise<{ model: Buffer; pid: number }> {
  await ok('fss', ['origin', 'add', sandbox.path('image'), ...(canAttach ? ['--attach'] : [])]);
  const model = readFileSync(sandbox.path('image'));
  await ok('fssconfig', ['-c', 'fss0', sandbox.path('image'), sandbox.path('backup')]);
  return { model, pid: sandbox.daemonPid() as number };
}

function kill(pid: number): void {
  process.kill(pid, 'SIGKILL');
}

/** A unix socket that nobody serves refuses at once: a clean error, no hang. */
function connectError(path: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}

/** Loop devices backed by files in the sandbox, and fss FUSE mounts in it. */
function sandboxDevices(): { loops: string[]; mounts: string[] } {
  const loops = execFileSync('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'], {
    encoding: 'utf8',
  })
    .split('\n')
    .filter((line) => line.includes(`${sandbox.dir}/`))
    .map((line) => line.trim().split(/\s+/)[0] as string)
    .sort();
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter((line) => line.split(' ')[1]?.startsWith(`${sandbox.dir}/`))
    .map((line) => line.split(' ')[1] as string)
    .sort();
  return { loops, mounts };
}

/** Detaches and unmounts what a killed daemon of this sandbox left (no daemon runs). */
function releaseSandboxDevices(): void {
  const { loops, mounts } = sandboxDevices();
  for (const loop of loops) execFileSync('losetup', ['--detach', loop]);
  for (const mount of mounts) execFileSync('umount', ['--lazy', mount]);
}

/** After the kill: the next start clears what was left, and fss0 comes back exact. */
async function expectCleanRestart(model: Buffer): Promise<void> {
  // Left behind: sockets nobody serves, which refuse clients at once.
  expect(existsSync(originSocket())).toBe(true);
  expect(await connectError(originSocket())).toBe('ECONNREFUSED');
  expect(await connectError(join(sandbox.runDir, 'fss0.sock'))).toBe('ECONNREFUSED');
  // The next start (on demand) reclaims the image and brings fss0 back.
  expect(await ok('fssconfig', ['-l', 'fss0'])).toBe(`fss0: ${sandbox.path('image')}\n`);
  const client = await NbdClient.connect(join(sandbox.runDir, 'fss0.sock'));
  const chunks: Buffer[] = [];
  for (let at = 0; at < IMAGE_BYTES; at += MiB) chunks.push(await client.read(at, MiB));
  client.disconnect();
  expect(Buffer.compare(Buffer.concat(chunks), model), 'fss0 after the restart').toBe(0);
  const writer = await NbdClient.connect(originSocket()); // the origin export answers again
  writer.disconnect();
  if (canAttach) {
    const status = JSON.parse(await ok('fss', ['status', '--json'])) as {
      origins: Array<{ loop?: string | null }>;
      units: Array<{ loop?: string | null }>;
    };
    const live = [...status.origins, ...status.units]
      .map((each) => each.loop)
      .filter((loop): loop is string => typeof loop === 'string')
      .sort();
    expect(live.length).toBeGreaterThan(0);
    const left = sandboxDevices();
    console.log(
      `crash-clients: after the restart: ${left.loops.join(' ')}, ${left.mounts.length} FUSE mounts`,
    );
    expect(left.loops, "only the new daemon's loop devices").toEqual(live);
    expect(left.mounts.length, "only the new daemon's FUSE mounts").toBe(live.length);
  }
}

describe.skipIf(!hasProgram('qemu-io') || !hasProgram('stdbuf'))('SIGKILL under qemu-io writes', () => {
  it('every write qemu-io saw acknowledged is on the image; qemu-io ends with an error; the next start cleans up', async () => {
    const { model, pid } = await configure();
    const seed = Date.now() % 100_000;
    console.log(`crash-clients qemu-io: seed ${seed}`);
    const random = new SeededRandom(seed);
    const blocks = IMAGE_BYTES / BLOCK;
    const order = Array.from({ length: blocks }, (_, index) => index);
    for (let i = order.length - 1; i > 0; i--) {
      const j = random.integer(0, i);
      [order[i], order[j]] = [order[j] as number, order[i] as number];
    }
    const patternOf = (block: number) => (block % 254) + 1;
    const commands = order.flatMap((block) => ['-c', `write -P ${patternOf(block)} ${block * BLOCK} 64k`]);
    const killAfter = random.integer(10, blocks / 2);
    let killed = false;
    const qemu = startClient('stdbuf', ['-oL', 'qemu-io', '-f', 'raw', nbdUri(), ...commands], (stdout) => {
      if (!killed && (stdout.match(/^wrote /gm)?.length ?? 0) >= killAfter) {
        killed = true;
        kill(pid);
      }
    });
    const { stdout, stderr } = await qemu.finished;
    expect(killed, `qemu-io finished before the kill: ${stderr}`).toBe(true);
    expect(`${stdout}${stderr}`).toMatch(/failed/i); // it was told, and it ended
    const acked = [...stdout.matchAll(/^wrote 65536\/65536 bytes at offset (\d+)/gm)].map((match) =>
      Number(match[1]),
    );
    expect(acked.length).toBeGreaterThanOrEqual(killAfter);
    console.log(
      `crash-clients qemu-io: killed after ${killAfter} acks, ${acked.length} acknowledged writes checked`,
    );
    const image = readFileSync(sandbox.path('image'));
    for (const offset of acked) {
      const block = image.subarray(offset, offset + BLOCK);
      const expected = patternOf(offset / BLOCK);
      expect(
        block.every((byte) => byte === expected),
        `acknowledged write at ${offset}`,
      ).toBe(true);
    }
    await waitFor(() => !existsSync(`/proc/${pid}`), 10_000);
    await expectCleanRestart(model);
  }, 240_000);
});

describe.skipIf(!hasProgram('fio'))('SIGKILL under fio (nbd engine) writes', () => {
  it("every write in fio's completion log is on the image; fio ends with an error; the next start cleans up", async () => {
    const { model, pid } = await configure();
    const before = readFileSync(sandbox.path('image'));
    const fio = startClient('fio', [
      '--name=crash',
      '--ioengine=nbd',
      `--uri=${nbdUri()}`,
      '--rw=randwrite',
      `--bs=${BLOCK}`,
      '--iodepth=8',
      '--time_based',
      '--runtime=120',
      '--verify=pattern',
      '--verify_pattern=%o',
      '--do_verify=0',
      '--verify_state_save=0',
      '--write_lat_log=acks',
      '--log_offset=1',
      '--randrepeat=0',
    ]);
    // Kill once a number of blocks hold what fio writes there (their offset, repeated).
    const holdsOffset = (image: Buffer, offset: number) => {
      const word = image.readBigUInt64LE(offset);
      if (word !== BigInt(offset)) return false;
      for (let at = offset; at < offset + BLOCK; at += 8)
        if (image.readBigUInt64LE(at) !== word) return false;
      return true;
    };
    const killAfter = 20 + (Date.now() % 60);
    const progressed = await waitFor(() => {
      const image = readFileSync(sandbox.path('image'));
      let written = 0;
      for (let offset = 0; offset < IMAGE_BYTES; offset += BLOCK)
        if (holdsOffset(image, offset)) written += 1;
      return written >= killAfter;
    }, 90_000);
    expect(progressed, 'fio wrote through the origin export').toBe(true);
    kill(pid);
    const { code, stderr } = await fio.finished;
    expect(code, 'fio reports the lost server').not.toBe(0);
    expect(stderr).toMatch(/nbd_poll: .*(Connection reset|state DEAD)|error/i);
    const log = readFileSync(sandbox.path('acks_clat.1.log'), 'utf8');
    const acked = log
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => line.split(',').map((field) => Number(field.trim())))
      .filter((fields) => fields[2] === 1) // writes
      .map((fields) => fields[4] as number);
    expect(acked.length).toBeGreaterThanOrEqual(killAfter);
    console.log(
      `crash-clients fio: ${acked.length} acknowledged writes checked (${new Set(acked).size} blocks)`,
    );
    const image = readFileSync(sandbox.path('image'));
    for (const offset of acked)
      expect(holdsOffset(image, offset), `acknowledged write at ${offset}`).toBe(true);
    // Blocks fio never completed a write to are either untouched or whole writes of it.
    const ackedSet = new Set(acked);
    for (let offset = 0; offset < IMAGE_BYTES; offset += BLOCK) {
      if (ackedSet.has(offset)) continue;
      const untouched = before
        .subarray(offset, offset + BLOCK)
        .equals(image.subarray(offset, offset + BLOCK));
      expect(untouched || holdsOffset(image, offset), `block at ${offset}`).toBe(true);
    }
    await waitFor(() => !existsSync(`/proc/${pid}`), 10_000);
    await expectCleanRestart(model);
  }, 240_000);
});
