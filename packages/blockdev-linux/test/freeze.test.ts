/**
 * Goal: FIFREEZE/FITHAW work off the main thread and the watchdog always thaws.
 *
 * Method: a real ext4 on a loop device. A child process writes to the frozen filesystem and
 * must stay blocked until we thaw; then its write lands. With no thaw, the watchdog thaws.
 * Finally the hardest case: our own main thread blocks inside a write to the frozen
 * filesystem (what happens when a process's I/O flows through the filesystem it froze), and
 * only the worker's watchdog can release it.
 *
 * Every case has a safety net that cannot itself deadlock: `fsfreeze -u` in the cleanup, and
 * for the self-blocking case an external `sleep; fsfreeze -u` process, killed by its pid.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { freezeFilesystem, withFrozenFilesystem } from '../src';
import { isRoot, ROOT_REASON, withExt4Mount, withLoop } from './helpers';

/** Thaws if still frozen; fsfreeze -u on a thawed filesystem fails with EINVAL, which is fine. */
function safetyThaw(mountPoint: string): void {
  try {
    execFileSync('fsfreeze', ['-u', mountPoint], { stdio: 'ignore' });
  } catch {
    // not frozen
  }
}

/** A child that appends `text` to `file` and syncs it; resolves with its exit code. */
function startWriter(file: string, text: string): { child: ChildProcess; exited: Promise<number | null> } {
  const child = spawn('sh', ['-c', `printf '%s' "$1" >> "$2" && sync "$2"`, 'writer', text, file], {
    stdio: 'ignore',
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function onFrozenExt4(use: (mountPoint: string) => Promise<void>): Promise<void> {
  await withLoop({ sizeBytes: 64 << 20 }, async ({ device }) => {
    await withExt4Mount(device, async (mountPoint) => {
      try {
        await use(mountPoint);
      } finally {
        safetyThaw(mountPoint);
      }
    });
  });
}

describe.skipIf(!isRoot)(`FIFREEZE / FITHAW (${ROOT_REASON})`, () => {
  it('blocks a writer while frozen and lets it finish after thaw', async () => {
    await onFrozenExt4(async (mountPoint) => {
      const file = join(mountPoint, 'log');
      writeFileSync(file, 'before;');
      const frozen = await freezeFilesystem(mountPoint, { timeoutMs: 30_000 });
      const writer = startWriter(file, 'during;');
      try {
        await sleep(700);
        expect(writer.child.exitCode, 'the writer finished on a frozen filesystem').toBeNull();
        const result = await frozen.thaw();
        expect(result.by).toBe('caller');
        expect(result.frozenMs).toBeGreaterThanOrEqual(600);
        expect(await writer.exited).toBe(0);
      } finally {
        await frozen.thaw();
        writer.child.kill();
      }
      expect(readFileSync(file, 'utf8')).toBe('before;during;');
    });
  });

  it('thaws by the watchdog when the caller never does', async () => {
    await onFrozenExt4(async (mountPoint) => {
      const frozen = await freezeFilesystem(mountPoint, { timeoutMs: 800 });
      const writer = startWriter(join(mountPoint, 'late'), 'x');
      try {
        const result = await frozen.thawed;
        expect(result.by).toBe('watchdog');
        expect(result.frozenMs).toBeGreaterThanOrEqual(790);
        expect(await writer.exited).toBe(0);
      } finally {
        writer.child.kill();
      }
    });
  });

  it('thaws by the watchdog while our own main thread is blocked on the frozen filesystem', async () => {
    await onFrozenExt4(async (mountPoint) => {
      // The safety net runs in its own process, so it works even if this thread never returns.
      const net = spawn('sh', ['-c', 'sleep 20; fsfreeze -u "$1"', 'net', mountPoint], { stdio: 'ignore' });
      try {
        const frozen = await freezeFilesystem(mountPoint, { timeoutMs: 1000 });
        const started = Date.now();
        writeFileSync(join(mountPoint, 'self'), 'blocked'); // blocks this thread until thawed
        const blockedMs = Date.now() - started;
        const result = await frozen.thawed;
        expect(result.by).toBe('watchdog');
        expect(blockedMs).toBeGreaterThanOrEqual(500);
        expect(blockedMs).toBeLessThan(15_000);
      } finally {
        net.kill();
      }
      expect(readFileSync(join(mountPoint, 'self'), 'utf8')).toBe('blocked');
    });
  });

  it('maps errors: freezing twice is EBUSY, and withFrozenFilesystem thaws after a failure', async () => {
    await onFrozenExt4(async (mountPoint) => {
      const failure = new Error('work failed');
      let secondError: unknown;
      await expect(
        withFrozenFilesystem(
          mountPoint,
          async () => {
            secondError = await freezeFilesystem(mountPoint, { timeoutMs: 1000 }).then(
              (unexpected) => unexpected.thaw(),
              (reason: unknown) => reason,
            );
            throw failure;
          },
          { timeoutMs: 30_000 },
        ),
      ).rejects.toBe(failure);
      expect(secondError).toMatchObject({ code: 'EBUSY', syscall: 'ioctl(FIFREEZE)', path: mountPoint });
      // Thawed: a write completes at once.
      const writer = startWriter(join(mountPoint, 'after'), 'y');
      expect(await writer.exited).toBe(0);
    });
  });

  it('thaws when the freezing process exits without thawing (exit hook)', async () => {
    await onFrozenExt4(async (mountPoint) => {
      const fixture = fileURLToPath(new URL('./fixtures/freeze-and-exit.ts', import.meta.url));
      const output = execFileSync(
        process.execPath,
        ['--conditions=@fss/source', '--import', 'tsx', fixture, mountPoint],
        { encoding: 'utf8', timeout: 30_000, cwd: fileURLToPath(new URL('..', import.meta.url)) },
      );
      expect(output).toBe('frozen\n');
      // The child is gone and its watchdog (120 s) never fired: only the exit hook can have thawed.
      const writer = startWriter(join(mountPoint, 'after-exit'), 'z');
      const finished = await Promise.race([writer.exited, sleep(5000).then(() => 'still blocked')]);
      writer.child.kill();
      expect(finished).toBe(0);
    });
  });

  it('names the path when the mount point does not exist', async () => {
    await expect(freezeFilesystem('/no/such/mount')).rejects.toMatchObject({
      code: 'ENOENT',
      path: '/no/such/mount',
    });
  });
});
