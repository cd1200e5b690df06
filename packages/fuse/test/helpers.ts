/**
 * Helpers for the kernel tests. The FUSE server runs in the test process, so the test process
 * must never touch the served file, a loop device over it or a filesystem on that device
 * itself: a synchronous call would block the very thread that has to answer the kernel
 * (docs/decisions.md, "Test processes never touch a filesystem they serve"). Every such
 * access goes through a child process started asynchronously (`run`), and temporary
 * directories are removed only after their mount is gone, asynchronously.
 */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import type { BlockDevice } from '@fss/core';
import { tempDir } from '@fss/test-utils';
import {
  type AttachBlockDeviceOptions,
  type AttachedBlockDevice,
  attachBlockDevice,
  isFssFuseMounted,
} from '../src';

export { isRoot, pattern, ROOT_REASON, tempDir } from '@fss/test-utils';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion in a child process; never rejects on a non-zero exit. */
export function run(
  command: string,
  args: string[],
  options: { timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { timeout: options.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, encoding: 'buffer' },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
        resolve({ code, stdout: stdout.toString('latin1'), stderr: stderr.toString('utf8') });
      },
    );
  });
}

/** Like `run`, but the child's stdout as bytes (for reading a device through a child). */
export function runBytes(
  command: string,
  args: string[],
): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { maxBuffer: 512 * 1024 * 1024, encoding: 'buffer' }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr: stderr.toString('utf8') });
    });
  });
}

/** Runs and asserts success, with the child's stderr in the error. */
export async function runOk(command: string, args: string[]): Promise<string> {
  const result = await run(command, args);
  if (result.code !== 0)
    throw new Error(`${command} ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

/** Cleanups not yet run: the file's afterAll runs them if a test timed out before its finally. */
export const unreleased = new Set<() => Promise<void>>();

/**
 * Runs `use` with `device` attached as /dev/loopN over a FUSE file on a new temporary mount
 * point; detaches, unmounts and removes the directory in every outcome.
 */
export async function withAttached<T>(
  device: BlockDevice,
  options: Partial<AttachBlockDeviceOptions>,
  use: (attached: AttachedBlockDevice) => Promise<T>,
): Promise<T> {
  const dir = tempDir('fss-fuse-');
  let attached: AttachedBlockDevice | undefined;
  const release = async () => {
    unreleased.delete(release);
    if (attached !== undefined) await attached.close();
    if (!(await isFssFuseMounted(dir.path))) await rm(dir.path, { recursive: true, force: true });
  };
  unreleased.add(release);
  try {
    attached = await attachBlockDevice(device, { mountPoint: dir.path, ...options });
    return await use(attached);
  } finally {
    await release();
  }
}
