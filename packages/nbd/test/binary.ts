/**
 * Runs the fss-nbd development binary from its TypeScript sources (no build needed): node
 * with the `@fss/source` condition and tsx, exactly as `pnpm exec fss-nbd` would run dist.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const packageRoot = fileURLToPath(new URL('..', import.meta.url));
const cliPath = fileURLToPath(new URL('../src/cli.ts', import.meta.url));

export interface RunningBinary {
  child: ChildProcess;
  stderr: () => string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop: () => Promise<number | null>;
}

export function binaryCommand(args: string[]): [string, string[]] {
  return [process.execPath, ['--conditions=@fss/source', '--import', 'tsx', cliPath, ...args]];
}

/** Starts fss-nbd and resolves once it prints "ready"; rejects if it exits first. */
export function startBinary(args: string[]): Promise<RunningBinary> {
  const [command, commandArgs] = binaryCommand(args);
  const child = spawn(command, commandArgs, { cwd: packageRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    return exited;
  };
  return new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes('ready\n')) resolve({ child, stderr: () => stderr, stop });
    });
    void exited.then((code) => reject(new Error(`fss-nbd exited with ${code} before ready: ${stderr}`)));
  });
}
