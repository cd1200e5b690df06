/**
 * The typed client against a stand-in daemon (a unix socket speaking the line protocol), so
 * the client's own rules are tested without fssd: answers matched by id when pipelined,
 * errors carried as FssErrors with the daemon's code and detail (unknown codes become EIO,
 * never a wrong meaning), a clear error when nothing answers, and how the program to start on
 * demand is found and what is said when it cannot start.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaultDaemonCommand, FssClient, LineSplitter, runPaths } from '../src/index';

let dir: string;
let server: Server | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fss-ctl-'));
});
afterEach(async () => {
  await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())));
  server = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** A daemon stand-in: answers each request line with `answer(request)`, in reverse order of a pair. */
async function standIn(answer: (request: Record<string, unknown>) => unknown): Promise<string> {
  const runDir = join(dir, 'run');
  mkdirSync(runDir);
  server = createServer((socket) => {
    const splitter = new LineSplitter(1 << 16);
    socket.on('data', (chunk: Buffer) => {
      for (const line of splitter.push(chunk).lines) {
        const request = JSON.parse(line) as Record<string, unknown>;
        // Answer late requests first: the client must match answers by id, not by order.
        setTimeout(() => socket.write(`${JSON.stringify(answer(request))}\n`), request['id'] === 1 ? 30 : 0);
      }
    });
  });
  await new Promise<void>((resolve) => server!.listen(runPaths(runDir).control, resolve));
  return runDir;
}

describe('FssClient', () => {
  it('matches pipelined answers by id and returns each result', async () => {
    const runDir = await standIn((request) => ({
      id: request['id'],
      ok: true,
      result: { echo: request['op'] },
    }));
    const client = await FssClient.connect({ runDir, autostart: false });
    const [first, second] = await Promise.all([client.request('ping'), client.request('status')]);
    expect(first).toEqual({ echo: 'ping' });
    expect(second).toEqual({ echo: 'status' });
    client.close();
  });

  it('rejects with the daemon errno code and detail; an unknown code becomes EIO', async () => {
    const runDir = await standIn((request) =>
      request['unit'] === 'fss0'
        ? {
            id: request['id'],
            ok: false,
            error: { code: 'EBUSY', errno: 16, message: 'Device or resource busy', detail: 'in use by fss1' },
          }
        : { id: request['id'], ok: false, error: { code: 'EWHATEVER', errno: 999, message: '?' } },
    );
    const client = await FssClient.connect({ runDir, autostart: false });
    await expect(client.get('fss0')).rejects.toMatchObject({
      code: 'EBUSY',
      errno: 16,
      description: 'in use by fss1',
      syscall: 'FSSIOCGET',
    });
    await expect(client.get('fss1')).rejects.toMatchObject({ code: 'EIO' });
    client.close();
  });

  it('without a daemon and without autostart: ENOENT naming the socket', async () => {
    const runDir = join(dir, 'nobody');
    await expect(FssClient.connect({ runDir, autostart: false })).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'connect',
      description: `cannot reach fssd at ${runPaths(runDir).control}: No such file or directory`,
    });
  });

  it('says why a daemon it started could not start: its last line on stderr', async () => {
    const runDir = join(dir, 'run');
    const failing = {
      command: process.execPath,
      args: ['-e', 'console.error("fssd: cannot start: EACCES: no way"); process.exit(1)', '--'],
    };
    await expect(FssClient.connect({ runDir, daemonCommand: failing })).rejects.toMatchObject({
      code: 'ECONNREFUSED',
      description: 'fssd exited (status 1) before it was ready: fssd: cannot start: EACCES: no way',
    });
  });
});

describe('the fssd to start on demand', () => {
  it('FSS_FSSD names it: sources run with this Node and its flags, .js with this Node, else exec', () => {
    expect(defaultDaemonCommand({ FSS_FSSD: '/src/fssd.ts' })).toEqual({
      command: process.execPath,
      args: [...process.execArgv, '/src/fssd.ts'],
    });
    expect(defaultDaemonCommand({ FSS_FSSD: '/lib/fssd.js' })).toEqual({
      command: process.execPath,
      args: ['/lib/fssd.js'],
    });
    expect(defaultDaemonCommand({ FSS_FSSD: '/usr/sbin/fssd' })).toEqual({
      command: '/usr/sbin/fssd',
      args: [],
    });
  });

  it('else an executable fssd on PATH; else ENOENT saying how to get one', () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'fssd'), '#!/bin/sh\n');
    chmodSync(join(bin, 'fssd'), 0o755);
    expect(defaultDaemonCommand({ PATH: `/nonexistent:${bin}` })).toEqual({
      command: join(bin, 'fssd'),
      args: [],
    });
    chmodSync(join(bin, 'fssd'), 0o644); // not executable: not a candidate
    expect(() => defaultDaemonCommand({ PATH: bin })).toThrowError(
      expect.objectContaining({ code: 'ENOENT', message: expect.stringContaining('install @fss/fssd') }),
    );
  });
});
