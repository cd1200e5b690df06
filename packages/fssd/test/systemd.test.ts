/**
 * fssd under systemd, tested without a running systemd: the shipped unit passes
 * `systemd-analyze verify` (ExecStart pointed at this checkout's fssd, its Documentation= man
 * pages rendered from the manuals into a MANPATH; a broken copy fails, so the check can fail),
 * the tmpfiles.d entry creates /run/fss 0700 under a --root, and the daemon itself: with
 * NOTIFY_SOCKET it sends READY=1 (with its MAINPID) once its control socket answers and
 * STOPPING=1 on SIGTERM; with --foreground its stderr lines have no timestamp, and carry
 * sd-daemon priorities when JOURNAL_STREAM names its stderr.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDatagramReceiver } from '@fss/blockdev-linux';
import { manPage } from '@fss/manual';
import { binArgs, hasProgram, Sandbox, waitFor } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FSSD_MANUAL } from '../src/manual';

const systemdDir = join(import.meta.dirname, '..', 'systemd');
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

describe.skipIf(!hasProgram('systemd-analyze'))('the shipped systemd files', () => {
  it('fssd.service passes systemd-analyze verify; a broken copy does not', () => {
    const man8 = sandbox.path('man/man8');
    mkdirSync(man8, { recursive: true });
    writeFileSync(join(man8, 'fssd.8'), manPage(FSSD_MANUAL, { source: 'fss', date: '2026-12-02' }));
    // fssconfig(8) and fss(8) are @fss/cli-fssconfig's (its manual test renders them): stand-ins here.
    for (const name of ['fssconfig', 'fss']) {
      writeFileSync(join(man8, `${name}.8`), `.TH ${name.toUpperCase()} 8\n.SH NAME\n${name} \\- stand-in\n`);
    }
    const unit = readFileSync(join(systemdDir, 'fssd.service'), 'utf8');
    expect(unit).toMatch(/^Type=notify$/m);
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/fssd --foreground /m);
    const verify = (text: string) => {
      const path = sandbox.path('fssd.service');
      // An executable fssd of this checkout (the unit must name one that exists).
      const program = sandbox.path('fssd');
      writeFileSync(program, `#!/bin/sh\nexec ${process.execPath} ${binArgs('fssd').join(' ')} "$@"\n`, {
        mode: 0o755,
      });
      writeFileSync(path, text.replaceAll('/usr/local/bin/fssd', program));
      return spawnSync('systemd-analyze', ['verify', path], {
        encoding: 'utf8',
        env: { ...process.env, MANPATH: sandbox.path('man') },
      });
    };
    const good = verify(unit);
    expect(good.status, good.stderr).toBe(0);
    expect(good.stderr).toBe('');
    expect(verify(unit.replace('Type=notify', 'Type=sometimes')).stderr).toMatch(
      /Failed to parse service type/,
    );
  });

  it.skipIf(!hasProgram('systemd-tmpfiles'))(
    'fss-tmpfiles.conf creates /run/fss and its origin/ 0700 root',
    () => {
      const root = sandbox.path('root');
      mkdirSync(root);
      execFileSync('systemd-tmpfiles', ['--create', `--root=${root}`, join(systemdDir, 'fss-tmpfiles.conf')]);
      for (const dir of ['run/fss', 'run/fss/origin']) {
        const info = statSync(join(root, dir));
        expect(info.isDirectory()).toBe(true);
        expect(info.mode & 0o777).toBe(0o700);
        expect(info.uid).toBe(0);
      }
    },
  );
});

describe('fssd for a service manager', () => {
  it('notifies READY=1 once it serves and STOPPING=1 on SIGTERM; --foreground logs bare lines, with priorities for the journal', async () => {
    const notifySocket = sandbox.path('notify');
    const receiver = openDatagramReceiver(notifySocket);
    const stderrPath = sandbox.path('stderr');
    const stderr = openSync(stderrPath, 'w');
    const { dev, ino } = statSync(stderrPath);
    const child = spawn(
      process.execPath,
      [...binArgs('fssd'), '--foreground', '--rundir', sandbox.runDir, '--devices', 'off'],
      {
        env: { ...sandbox.env, NOTIFY_SOCKET: notifySocket, JOURNAL_STREAM: `${dev}:${ino}` },
        stdio: ['ignore', 'ignore', stderr],
      },
    );
    closeSync(stderr);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const messages: string[] = [];
      const take = () => {
        for (let message = receiver.receive(); message !== undefined; message = receiver.receive()) {
          messages.push(message);
        }
        return messages;
      };
      expect(await waitFor(() => take().length > 0, 30_000)).toBe(true);
      expect(messages[0]).toBe(`READY=1\nMAINPID=${child.pid}\nSTATUS=serving ${sandbox.runDir}`);
      // Ready means ready: the control socket answers now.
      expect((await sandbox.run('fssconfig', ['-l', 'fss0'])).stdout).toBe('fss0: not in use\n');
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      take();
      expect(messages).toEqual([messages[0], 'STOPPING=1']);
      const lines = readFileSync(stderrPath, 'utf8').trimEnd().split('\n');
      for (const line of lines) expect(line).toMatch(/^<[346]>\S/);
      expect(lines).toContain('<6>SIGTERM received');
      expect(lines.some((line) => /^<6>started: /.test(line))).toBe(true);
      expect(lines.join('\n')).not.toMatch(/\d{4}-\d\d-\d\dT\d\d:/);
      // The file log keeps its stamps.
      expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(
        /^\d{4}-\d\d-\d\dT.* fssd\[\d+\]: /,
      );
    } finally {
      receiver.close();
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
