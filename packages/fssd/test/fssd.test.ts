/**
 * The daemon itself: run directory and socket modes, one daemon per run directory, the
 * control protocol's errnos and its robustness against junk, the typed client, and SIGTERM
 * releasing everything.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { FssClient } from '@fss/control';
import { FSS_UNCONFIG_ON_CLOSE, FSSIOCGET, FSSIOCSET, isFssError } from '@fss/core';
import { binArgs, isAlive, Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Fssd } from '../src/fssd';

const MiB = 1024 * 1024;
/** As root with FUSE, every unit also gets a kernel device (/dev/fssN in the sandbox). */
const DEVICES = process.getuid?.() === 0 && existsSync('/dev/fuse') && existsSync('/dev/loop-control');
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), Buffer.alloc(2 * MiB));
});
afterEach(async () => {
  await sandbox.cleanup();
});

function connect(): Promise<FssClient> {
  return FssClient.connect({
    runDir: sandbox.runDir,
    daemonCommand: {
      command: process.execPath,
      args: [...binArgs('fssd'), '--devdir', sandbox.devDir, '--statedir', sandbox.stateDir],
    },
  });
}

/** Sends raw bytes on the control socket and collects the answer lines until it closes or goes quiet. */
function exchange(payload: string | Buffer, quietMs = 400): Promise<{ lines: string[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path: join(sandbox.runDir, 'fssd.sock') });
    let text = '';
    let timer: NodeJS.Timeout | undefined;
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ lines: text.split('\n').filter((line) => line !== ''), closed });
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(false), quietMs);
    };
    socket.on('connect', () => {
      socket.write(payload);
      arm();
    });
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      text += chunk;
      arm();
    });
    socket.on('close', () => finish(true));
    socket.on('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EPIPE' ? undefined : reject(error),
    );
  });
}

/** Connects without starting a daemon, retrying until the one we spawned listens. */
async function connectWhenReady(): Promise<FssClient> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await FssClient.connect({ runDir: sandbox.runDir, autostart: false });
    } catch (error) {
      if (attempt > 400) throw error;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}

/** fssd started by the test itself (not detached), with its exit status. */
function spawnDaemon(): { pid: number; exited: Promise<{ status: number | null; signal: string | null }> } {
  const child = spawn(
    process.execPath,
    [...binArgs('fssd'), '--rundir', sandbox.runDir, '--statedir', sandbox.stateDir],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: sandbox.env,
    },
  );
  child.stderr.resume();
  const exited = new Promise<{ status: number | null; signal: string | null }>((resolve) =>
    child.on('close', (status, signal) => resolve({ status, signal })),
  );
  sandbox.pids.add(child.pid as number);
  return { pid: child.pid as number, exited };
}

describe('fssd', () => {
  it('makes the run directory 0700 and the control socket 0600, and writes its pid', async () => {
    const client = await connect();
    const ping = await client.request('ping');
    client.close();
    expect(statSync(sandbox.runDir).mode & 0o777).toBe(0o700);
    expect(statSync(join(sandbox.runDir, 'fssd.sock')).mode & 0o777).toBe(0o600);
    expect(sandbox.daemonPid()).toBe(ping.pid);
    expect(existsSync(join(sandbox.runDir, 'fssd.log'))).toBe(true);
  });

  it('runs once per run directory: a second fssd exits 3 and says why', async () => {
    (await connect()).close();
    const second = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [...binArgs('fssd'), '--rundir', sandbox.runDir, '--statedir', sandbox.stateDir],
        {
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (text: string) => {
        stderr += text;
      });
      child.on('close', (status) => resolve({ status, stderr }));
    });
    expect(second.status).toBe(3);
    expect(second.stderr).toContain(`fssd: another fssd is running for ${sandbox.runDir}`);
  });

  it('answers the ioctls with NetBSD 1.63 errnos', async () => {
    const client = await connect();
    const errno = (promise: Promise<unknown>) =>
      promise.then(
        () => 'ok',
        (error: unknown) => (isFssError(error) ? error.code : String(error)),
      );
    const set = {
      fss_mount: sandbox.path('image'),
      fss_bstore: sandbox.path('b'),
      fss_csize: 0,
      fss_flags: 0,
    };
    expect(await errno(client.get('fss0'))).toBe('ENXIO');
    expect(await errno(client.clear('fss0'))).toBe('ENXIO');
    expect(await errno(client.get('fss16'))).toBe('ENXIO');
    expect(await errno(client.ioctl('FSSIOCSET', 'fss0', { arg: set }))).toBe('EPERM');
    expect(await errno(client.ioctl('FSSIOCCLR', 'fss0'))).toBe('EPERM');
    expect(existsSync(sandbox.path('b'))).toBe(false);
    expect(await client.set('fss0', set)).toMatchObject({ unit: 'fss0', bstore: sandbox.path('b') });
    expect(await errno(client.set('fss0', set))).toBe('EBUSY');
    const info = await client.get('fss0');
    expect(info).toMatchObject({ fsg_mount: sandbox.path('image'), fsg_csize: 65536, fsg_mount_size: 32 });
    expect(Math.abs(info.fsg_time.tv_sec - Date.now() / 1000)).toBeLessThan(60);
    await client.setFlags('fss0', 0x40);
    expect(await client.getFlags('fss0')).toBe(0x40);
    await client.clear('fss0');
    expect(await client.getFlags('fss7')).toBe(0);
    expect(await errno(client.request('FSSIOCGET', { unit: 'fss0', request: FSSIOCSET }))).toBe('EINVAL');
    expect(await errno(client.request('FSSIOCGET', { unit: 'fss0', request: FSSIOCGET }))).toBe('ENXIO');
    client.close();
  });

  it('FSS_UNCONFIG_ON_CLOSE unconfigures the unit when the control connection that set it closes', async () => {
    const holder = await connect();
    await holder.set('fss2', {
      fss_mount: sandbox.path('image'),
      fss_bstore: sandbox.path('b'),
      fss_csize: 0,
      fss_flags: FSS_UNCONFIG_ON_CLOSE,
    });
    const watcher = await connect();
    expect((await watcher.status()).units[2]?.state).toBe('active');
    holder.close();
    let state = 'active';
    for (let tries = 0; tries < 50 && state !== 'idle'; tries += 1) {
      state = (await watcher.status()).units[2]?.state ?? '';
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(state).toBe('idle');
    expect(await watcher.originList()).toEqual([]);
    watcher.close();
  });

  it('FSS_UNCONFIG_ON_CLOSE waits for the last NBD client of the export, and an implicit origin for its own', async () => {
    const holder = await connect();
    const { export: unitSocket } = await holder.set('fss4', {
      fss_mount: sandbox.path('image'),
      fss_bstore: sandbox.path('b'),
      fss_csize: 0,
      fss_flags: FSS_UNCONFIG_ON_CLOSE,
    });
    const nbdClient = createConnection({ path: unitSocket });
    const originClient = createConnection({ path: join(sandbox.runDir, 'origin', 'image.sock') });
    await Promise.all(
      [nbdClient, originClient].map((socket) => new Promise((resolve) => socket.once('connect', resolve))),
    );
    const watcher = await connect();
    holder.close();
    await new Promise((resolve) => setTimeout(resolve, 500)); // the control close has been handled
    expect((await watcher.status()).units[4]).toMatchObject({ state: 'active', exportClients: 1 });
    nbdClient.destroy();
    const stateAfter = async (predicate: () => Promise<boolean>) => {
      for (let tries = 0; tries < 100; tries += 1) {
        if (await predicate()) return true;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return false;
    };
    expect(await stateAfter(async () => (await watcher.status()).units[4]?.state === 'idle')).toBe(true);
    // The origin was claimed implicitly: it stays while a client is on its export.
    expect(await watcher.originList()).toMatchObject([
      { name: 'image', explicit: false, units: [], exportClients: 1 },
    ]);
    originClient.destroy();
    expect(await stateAfter(async () => (await watcher.originList()).length === 0)).toBe(true);
    watcher.close();
  });

  it('survives junk on the control socket and answers EINVAL', async () => {
    (await connect()).close();
    const cases = [
      'not json',
      '[1,2,3]',
      '{"op":42}',
      '{"op":"FSSIOCNOPE","unit":"fss0"}',
      '{"op":"FSSIOCGET"}',
      '{"op":"FSSIOCGET","unit":"fss0","mode":"rwx"}',
      '{"op":"FSSIOCGET","unit":"fss0","request":1}',
      '{"op":"FSSIOCGET","unit":"fss0","extra":true}',
      '{"op":"FSSIOCSET","unit":"fss0","mode":"rw","arg":{"fss_mount":1}}',
      '{"op":"FSSIOCSET","unit":"fss0","mode":"rw","arg":{"fss_mount":"/a","fss_bstore":"/b","fss_csize":-1,"fss_flags":0}}',
      '{"op":"FSSIOCSET","unit":"fss0","mode":"rw","arg":{"fss_mount":"rel","fss_bstore":"/b","fss_csize":0,"fss_flags":0}}',
      '{"op":"FSSIOFSET","unit":"fss0","arg":1.5}',
      '{"op":"FSSIOCGET","unit":"../../etc"}',
      '{"op":"origin-add","path":{}}',
      '{"op":"origin-rm","name":"a\\u0000b"}',
      '\u0000\u0001\u0002\u00ff',
      '',
    ];
    const { lines } = await exchange(`${cases.join('\n')}\n`);
    expect(lines).toHaveLength(cases.length); // an empty line is not JSON either
    for (const line of lines)
      expect(JSON.parse(line)).toMatchObject({ ok: false, error: { code: 'EINVAL', errno: 22 } });

    const oversized = await exchange(`{"op":"ping","pad":"${'x'.repeat(100 * 1024)}"}\n{"op":"ping"}\n`);
    expect(oversized.closed).toBe(true);
    expect(oversized.lines.map((line) => JSON.parse(line).error?.code)).toEqual(['EINVAL']);

    const binary = await exchange(Buffer.from(Array.from({ length: 4096 }, (_, index) => (index * 7) % 256)));
    for (const line of binary.lines) expect(JSON.parse(line).ok).toBe(false);

    const pid = sandbox.daemonPid() as number;
    expect(isAlive(pid)).toBe(true);
    const after = await exchange('{"id":"still-there","op":"ping"}\n');
    expect(JSON.parse(after.lines[0] as string)).toMatchObject({
      id: 'still-there',
      ok: true,
      result: { pid },
    });
  });

  it('SIGTERM unconfigures, releases every claim, removes its sockets and pid file, exits 0', async () => {
    // Our own child, so its exit status is ours to see (a daemon a client started is not).
    const daemon = spawnDaemon();
    const client = await connectWhenReady();
    expect((await client.request('ping')).pid).toBe(daemon.pid);
    await client.originAdd(sandbox.path('image'), 'disk');
    await client.set('fss0', {
      fss_mount: sandbox.path('image'),
      fss_bstore: sandbox.path('b0'),
      fss_csize: 0,
      fss_flags: 0,
    });
    await client.set('fss1', {
      fss_mount: sandbox.path('image'),
      fss_bstore: sandbox.path('b1'),
      fss_csize: 4096,
      fss_flags: 0,
    });
    client.close();
    expect(readdirSync(sandbox.runDir).sort()).toEqual(
      [
        ...(DEVICES ? ['devices'] : []), // the records of fss0's and fss1's /dev/fssN
        'fss0.sock',
        'fss1.sock',
        'fssd.log',
        'fssd.pid',
        'fssd.sock',
        'origin',
        ...(DEVICES ? ['fuse'] : []),
      ].sort(),
    );
    if (DEVICES) expect(readdirSync(sandbox.devDir).sort()).toEqual(['fss0', 'fss1']);
    expect(readdirSync(join(sandbox.runDir, 'origin'))).toEqual(['disk.sock']);
    const pid = sandbox.daemonPid() as number;
    expect(pid).toBe(daemon.pid);
    process.kill(pid, 'SIGTERM');
    expect(await daemon.exited).toEqual({ status: 0, signal: null });
    expect(readdirSync(sandbox.runDir)).toEqual(['fssd.log', 'origin']);
    expect(readdirSync(join(sandbox.runDir, 'origin'))).toEqual([]);
    // A client started this daemon and closed its stderr: what it says about the signal is in the file.
    expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(
      new RegExp(`fssd\\[${pid}\\]: SIGTERM received\n(.*\n)*.*fssd\\[${pid}\\]: stopped\n$`),
    );
    // The claims were released (the image could be claimed by anyone now); the units were on
    // named backups, so they are persistent: the next daemon brings them and their origin back.
    const again = await connect();
    const status = await again.status();
    expect(
      status.units
        .filter((unit) => unit.state === 'active')
        .map((unit) => [unit.unit, unit.persistent, unit.valid]),
    ).toEqual([
      ['fss0', true, true],
      ['fss1', true, true],
    ]);
    expect(status.origins.map((origin) => [origin.name, origin.explicit])).toEqual([['disk', true]]);
    await again.clear('fss0');
    await again.clear('fss1');
    await again.originRemove('disk');
    expect(await again.originAdd(sandbox.path('image'))).toMatchObject({ name: 'image', explicit: true });
    again.close();
  });

  it('a start that fails part-way leaves no pid file, no socket and no lock', async () => {
    mkdirSync(sandbox.runDir, { mode: 0o700 });
    writeFileSync(join(sandbox.runDir, 'origin'), 'not a directory'); // fails after the pid file
    const failed = spawnDaemon();
    expect((await failed.exited).status).toBe(1);
    expect(readdirSync(sandbox.runDir)).toEqual(['origin']);
    // The same in-process: the lock is released, so the next start of this run directory works.
    const logged: string[] = [];
    const first = new Fssd({
      runDir: sandbox.runDir,
      devDir: sandbox.devDir,
      log: (line) => logged.push(line),
    });
    await expect(first.start()).rejects.toMatchObject({ code: 'EEXIST', syscall: 'mkdir' });
    expect(readdirSync(sandbox.runDir)).toEqual(['origin']);
    rmSync(join(sandbox.runDir, 'origin'));
    const second = new Fssd({
      runDir: sandbox.runDir,
      devDir: sandbox.devDir,
      log: (line) => logged.push(line),
    });
    await second.start();
    await first.stop(); // nothing of its own to release: the second's files stay
    expect(readdirSync(sandbox.runDir).sort()).toEqual(['fssd.pid', 'fssd.sock', 'origin']);
    await second.stop();
    expect(readdirSync(sandbox.runDir)).toEqual(['origin']);
  });

  it('a stop requested while starting waits for the start, then releases everything', async () => {
    const daemon = new Fssd({ runDir: sandbox.runDir, devDir: sandbox.devDir, log: () => undefined });
    const starting = daemon.start();
    const stopping = daemon.stop(); // before start() has done anything
    await starting;
    await stopping;
    expect(readdirSync(sandbox.runDir).sort()).toEqual(['origin']);
    const next = new Fssd({ runDir: sandbox.runDir, devDir: sandbox.devDir, log: () => undefined });
    await next.start(); // the lock was released
    await next.stop();
  });

  it('SIGTERM during start-up still releases everything and exits 0', async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const daemon = spawnDaemon();
      const pidFile = join(sandbox.runDir, 'fssd.pid');
      // As soon as start-up has made its first file, while it is still going.
      while (!existsSync(pidFile)) await new Promise((resolve) => setImmediate(resolve));
      process.kill(daemon.pid, 'SIGTERM');
      expect(await daemon.exited).toEqual({ status: 0, signal: null });
      expect(readdirSync(sandbox.runDir).filter((name) => name !== 'fssd.log' && name !== 'origin')).toEqual(
        [],
      );
    }
  });

  it('stops by itself, releasing everything, when its run directory is removed', async () => {
    const daemon = spawnDaemon();
    const client = await connectWhenReady();
    await client.set('fss0', {
      fss_mount: sandbox.path('image'),
      fss_bstore: sandbox.path('b0'),
      fss_csize: 0,
      fss_flags: 0,
    });
    client.close();
    // A unit's FUSE mount point inside it cannot go while mounted; everything else does.
    const removing = () => rmSync(sandbox.runDir, { recursive: true, force: true });
    if (DEVICES) expect(removing).toThrow(/EBUSY/);
    else removing();
    expect(await daemon.exited).toEqual({ status: 0, signal: null });
    removing(); // the daemon detached and unmounted everything on its way out
    // The claim went with it: the image can be claimed again.
    const again = await connect();
    expect(await again.originAdd(sandbox.path('image'))).toMatchObject({ name: 'image' });
    again.close();
  });
});
