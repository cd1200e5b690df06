/**
 * Child processes and /proc readings for the reliability tests. Every child is run
 * asynchronously (the test process may serve what the child uses) with a time limit, so a
 * client that would hang fails the test instead of the run; every limit is a safety net, never
 * what a test measures.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export interface CommandResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the time limit ended it (SIGKILL). */
  timedOut: boolean;
}

export interface CommandOptions {
  /** SIGKILL after this long (default 120 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to the child's stdin, which is then closed. */
  input?: string;
}

/** Runs a program to completion; never rejects because of its exit status. */
export function runCommand(
  command: string,
  args: readonly string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 120_000);
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, timedOut });
    });
  });
}

/** The path of `program` in the first PATH entry that has it, or undefined. */
export function findProgram(program: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    try {
      if (dir !== '' && readdirSync(dir).includes(program)) return `${dir}/${program}`;
    } catch {
      // An unreadable PATH entry.
    }
  }
  return undefined;
}

/** True when `program` is on PATH. */
export function hasProgram(program: string): boolean {
  return findProgram(program) !== undefined;
}

/** Resident memory of a process in bytes (VmRSS), or undefined when it is gone. */
export function residentBytes(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
    return match === null ? undefined : Number(match[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** The open descriptors of a process, each as what it points at (`socket:[123]`, a path). */
export function openDescriptors(pid: number): string[] {
  const dir = `/proc/${pid}/fd`;
  const found: string[] = [];
  for (const fd of readdirSync(dir)) {
    try {
      found.push(readlinkSync(`${dir}/${fd}`));
    } catch {
      // Closed while we looked.
    }
  }
  return found.sort();
}
