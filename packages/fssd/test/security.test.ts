/**
 * Security (SPEC §4, §6, issue 11 item 6), through the real daemon:
 *
 * - Modes: the run directory and its origin directory 0700 (tightened when an earlier run
 *   left them looser), the control, unit and origin sockets 0600, the store 0600, the state
 *   directory 0700.
 * - Peer credentials: with every mode loosened on purpose (directories 0755, sockets 0666),
 *   a client running as `nobody` reaches the sockets but is refused by the daemon itself
 *   (SO_PEERCRED): the real `fss status` fails EACCES saying why, an NBD client of the unit
 *   and of the origin export is closed before the greeting, and the log names the uid. Root
 *   (this test) is still served. Root only: it needs setpriv to become another user.
 * - Snapshot exports are read-only at the protocol level: the READ_ONLY flag, and WRITE, TRIM
 *   and WRITE_ZEROES answered EPERM; the snapshot and the origin read back as their models.
 * - Directory backups get unpredictable temporary names (10 random characters, different
 *   each time), created O_EXCL|O_NOFOLLOW; a symlink planted at a named backup path is
 *   refused (configure.test.ts, "a backup path that is a symlink").
 */
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { binArgs, isRoot, NbdClient, NbdCommand, pattern, ROOT_REASON, Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const NOBODY = 65534;
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), pattern(4 * MiB, 7));
});
afterEach(async () => {
  await sandbox.cleanup();
});

async function ok(bin: 'fss' | 'fssconfig', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args);
  expect(result, `${bin} ${args.join(' ')}`).toMatchObject({ status: 0, stderr: '' });
  return result.stdout;
}

const mode = (path: string): string => (statSync(path).mode & 0o777).toString(8);

/** Runs `args` as uid/gid 65534 with no supplementary groups; never throws. */
async function asNobody(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ status: number; stdout: string; stderr: string }> {
  const setpriv = ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--'];
  return exec('setpriv', [...setpriv, ...args], { env, cwd: '/' }).then(
    ({ stdout, stderr }) => ({ status: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({
      status: error.code,
      stdout: error.stdout,
      stderr: error.stderr,
    }),
  );
}

/**
 * A raw client for the NBD sockets: connects, reads what the server sends within a while,
 * and prints `connected N` with the number of bytes it got before the server closed.
 */
const NBD_PROBE = `
const socket = require('node:net').createConnection({ path: process.argv[1] });
let bytes = 0;
socket.on('connect', () => console.log('connected'));
socket.on('data', (chunk) => { bytes += chunk.length; });
socket.on('error', (error) => { console.log('error ' + error.code); });
socket.on('close', () => { console.log('closed after ' + bytes + ' bytes'); process.exit(0); });
setTimeout(() => { console.log('still open after ' + bytes + ' bytes'); process.exit(0); }, 3000);
`;

describe('modes', () => {
  it('run and origin directories 0700 (tightened), sockets 0600, store 0600, state directory 0700', async () => {
    // An earlier run left both directories loose; the daemon tightens them at start.
    mkdirSync(join(sandbox.runDir, 'origin'), { recursive: true });
    chmodSync(sandbox.runDir, 0o755);
    chmodSync(join(sandbox.runDir, 'origin'), 0o755);
    await ok('fssconfig', ['fss0', 'image', 'backup']);
    expect({
      run: mode(sandbox.runDir),
      origin: mode(join(sandbox.runDir, 'origin')),
      control: mode(join(sandbox.runDir, 'fssd.sock')),
      unit: mode(join(sandbox.runDir, 'fss0.sock')),
      originSocket: mode(join(sandbox.runDir, 'origin', 'image.sock')),
      store: mode(sandbox.path('backup')),
      state: mode(sandbox.stateDir),
    }).toEqual({
      run: '700',
      origin: '700',
      control: '600',
      unit: '600',
      originSocket: '600',
      store: '600',
      state: '700',
    });
  });

  it('directory backups get unpredictable temporary names, different for every unit', async () => {
    mkdirSync(sandbox.path('dir'));
    for (const unit of ['fss0', 'fss1', 'fss2', 'fss3']) await ok('fssconfig', [unit, 'image', 'dir']);
    const status = JSON.parse(await ok('fss', ['status', '--json'])) as {
      units: { backup?: string | null }[];
    };
    const names = status.units
      .slice(0, 4)
      .map((unit) => (unit.backup ?? '').slice(sandbox.path('dir').length + 1));
    for (const name of names) expect(name).toMatch(/^[A-Za-z0-9]{10}$/);
    expect(new Set(names).size).toBe(4);
  });
});

describe('snapshot exports are read-only at the protocol level', () => {
  it('READ_ONLY flag; WRITE, TRIM and WRITE_ZEROES are EPERM; snapshot and origin unchanged', async () => {
    const model = readFileSync(sandbox.path('image'));
    await ok('fssconfig', ['fss0', 'image', 'backup']);
    const snapshot = await NbdClient.connect(join(sandbox.runDir, 'fss0.sock'));
    try {
      expect(snapshot.readOnly).toBe(true);
      const refused = async (command: number, payload?: Uint8Array): Promise<string> =>
        snapshot.request(command, 0, 4096, payload).then(
          () => 'accepted',
          (error: { code: string }) => error.code,
        );
      expect(await refused(NbdCommand.WRITE, new Uint8Array(4096).fill(0xee))).toBe('EPERM');
      expect(await refused(NbdCommand.TRIM)).toBe('EPERM');
      expect(await refused(NbdCommand.WRITE_ZEROES)).toBe('EPERM');
      expect(snapshot.closed).toBe(false); // refused requests do not cost the connection
      expect((await snapshot.read(0, model.length)).equals(model)).toBe(true);
    } finally {
      snapshot.destroy();
    }
    expect(readFileSync(sandbox.path('image')).equals(model)).toBe(true);
  });
});

describe.skipIf(!isRoot)(
  `another user is refused by peer credentials, not only by modes (${ROOT_REASON})`,
  () => {
    it('nobody reaches loosened sockets, and fssd refuses it on the control socket and both exports', async () => {
      await ok('fssconfig', ['fss0', 'image', 'backup']);
      const sockets = {
        control: join(sandbox.runDir, 'fssd.sock'),
        unit: join(sandbox.runDir, 'fss0.sock'),
        origin: join(sandbox.runDir, 'origin', 'image.sock'),
      };
      // Take the first fence down on purpose: anyone may traverse to and connect to every socket.
      for (const dir of [sandbox.dir, sandbox.runDir, join(sandbox.runDir, 'origin')]) chmodSync(dir, 0o755);
      for (const socket of Object.values(sockets)) chmodSync(socket, 0o666);

      const env = { ...sandbox.env, TSX_DISABLE_CACHE: '1', HOME: '/' };
      const status = await asNobody([process.execPath, ...binArgs('fss'), 'status'], env);
      expect(status.status).toBe(1);
      expect(status.stderr).toMatch(
        /^fss: status: Permission denied\nfss: status: fssd serves root and its own user only: uid 65534 \(pid \d+\) is neither root nor the daemon's user \(uid 0\)\n$/,
      );
      for (const socket of [sockets.unit, sockets.origin]) {
        const probe = await asNobody([process.execPath, '-e', NBD_PROBE, socket], env);
        // The kernel let it connect (the modes allow it); the daemon closed it unanswered.
        expect(probe.stdout, socket).toBe('connected\nclosed after 0 bytes\n');
      }
      const log = readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8');
      expect(log).toMatch(/control: refusing a client: uid 65534 \(pid \d+\)/);
      expect(log).toMatch(/fss0: nbd: refusing a client: uid 65534/);
      expect(log).toMatch(/image: nbd: refusing a client: uid 65534/);

      // Root is still served on every socket, and nobody changed anything.
      expect(await ok('fssconfig', ['-l', 'fss0'])).toBe(`fss0: ${sandbox.path('image')}\n`);
      const unit = await NbdClient.connect(sockets.unit);
      expect((await unit.read(0, 4096)).equals(pattern(4 * MiB, 7).subarray(0, 4096))).toBe(true);
      unit.destroy();
      // A refused connection holds nothing up: SIGTERM still stops the daemon cleanly (it once
      // waited forever on the refused control connection, and cleanup had to SIGKILL it).
      await sandbox.stopDaemon();
      expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(/: stopped\n$/);
    });
  },
);

const DEVICES = isRoot && existsSync('/dev/fuse') && existsSync('/dev/loop-control');
/** What fssd needs as root: CAP_SYS_ADMIN (FUSE mount, loop devices, freeze) and CAP_SYS_PTRACE (the bypass scan of /proc/PID/fd). */
const CAPS = '+sys_admin,+sys_ptrace';
const CAP_SYS_PTRACE = 19;
const CAP_SYS_ADMIN = 21;

describe.skipIf(!DEVICES)(
  `fssd runs with only the capabilities it needs (${ROOT_REASON}, /dev/fuse and loop)`,
  () => {
    it('under setpriv with CAP_SYS_ADMIN and CAP_SYS_PTRACE only: attach, configure, a device per unit, clean stop', async () => {
      const setpriv = [
        `--inh-caps=-all,${CAPS}`,
        `--ambient-caps=-all,${CAPS}`,
        `--bounding-set=-all,${CAPS}`,
        '--',
      ];
      const daemonArgs = [
        '--rundir',
        sandbox.runDir,
        '--statedir',
        sandbox.stateDir,
        '--devdir',
        sandbox.devDir,
      ];
      const child = spawn('setpriv', [...setpriv, process.execPath, ...binArgs('fssd'), ...daemonArgs], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: sandbox.env,
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (text: string) => {
        stderr += text;
      });
      const exited = new Promise<number | null>((resolve) => child.on('close', (status) => resolve(status)));
      sandbox.pids.add(child.pid as number);
      for (let tries = 0; tries < 400 && sandbox.daemonPid() === undefined; tries++)
        await new Promise((resolve) => setTimeout(resolve, 25));
      const pid = sandbox.daemonPid() as number;
      const effective = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      expect(BigInt(`0x${effective}`)).toBe((1n << BigInt(CAP_SYS_ADMIN)) | (1n << BigInt(CAP_SYS_PTRACE)));
      await ok('fss', ['origin', 'add', 'image', '--attach']);
      await ok('fssconfig', ['fss0', 'image', 'backup']);
      const originDevice = join(sandbox.devDir, 'fss', 'image');
      const unitDevice = join(sandbox.devDir, 'fss0');
      // Write through the origin's kernel device; the unit's device keeps the old bytes.
      writeFileSync(originDevice, Buffer.alloc(4096, 0xcc), { flag: 'r+' });
      const model = pattern(4 * MiB, 7);
      expect(readFileSync(unitDevice).equals(model)).toBe(true);
      expect(readFileSync(originDevice).subarray(0, 4096).equals(Buffer.alloc(4096, 0xcc))).toBe(true);
      await ok('fssconfig', ['-u', 'fss0']);
      await ok('fss', ['origin', 'rm', 'image']);
      process.kill(pid, 'SIGTERM');
      expect(await exited, stderr).toBe(0);
      expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(/: stopped\n$/);
    });
  },
);
