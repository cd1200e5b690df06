/**
 * `fss export --tcp` end to end (issue 14: backups from another machine), on 127.0.0.1 only:
 * the real CLI and daemon (spawned from sources in a Sandbox), stock clients on the other
 * side.
 *
 * Goal, and method:
 *   - data: after random writes (fast-check) through the origin's export, nbdcopy over
 *     `nbds://` reads the snapshot equal to its model (the image copied at snapshot time),
 *     with PSK and with x509 certificates; the wire stays read-only (qemu-io's write fails);
 *   - lifecycle: `fss status` (text and JSON) shows the listener, a second export is EBUSY,
 *     `fss export --stop` closes the port, and unconfiguring the unit closes it too;
 *   - refusals: no TLS option without --insecure, a plaintext client of a TLS listener, a
 *     wrong PSK key, a bad ADDR:PORT, an unconfigured unit, missing credentials, a port in use;
 *     --insecure serves plaintext because it was asked for.
 *
 * Certificates and keys are made at test time with openssl.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { FssClient } from '@fss/control';
import {
  hasProgram,
  makeCa,
  makeCertificate,
  makePskFile,
  NbdClient,
  pattern,
  runCommand,
  Sandbox,
  waitFor,
} from '@fss/test-utils';
import { Ajv2020 } from 'ajv/dist/2020';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const IMAGE_BYTES = 4 * MiB;
const RUNS = Math.min(Number(process.env.FSS_PROPERTY_RUNS ?? 3), 6);
const TOOLS = ['openssl', 'nbdinfo', 'nbdcopy', 'qemu-io'];
const missing = TOOLS.filter((tool) => !hasProgram(tool));

const statusSchema = JSON.parse(
  readFileSync(new URL('../schema/status.schema.json', import.meta.url), 'utf8'),
);
const validateStatus = new Ajv2020({ strict: true, allErrors: true }).compile(statusSchema);

let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), pattern(IMAGE_BYTES, 14));
  if (missing.length > 0) return;
  makeCa(sandbox.path('ca'), 'fss test CA');
  makeCertificate(sandbox.path('ca'), sandbox.path('tls'), 'server');
  makeCertificate(sandbox.path('ca'), sandbox.path('client'), 'client');
  makePskFile(sandbox.path('keys.psk'), 'backup');
  makePskFile(sandbox.path('wrong.psk'), 'backup');
});
afterEach(async () => {
  await sandbox.cleanup();
});

/** The port in `fss export`'s line `fss0: nbds://127.0.0.1:PORT/fss0 (...)`. */
function portOf(stdout: string): number {
  const match = /:\/\/127\.0\.0\.1:(\d+)\/fss0 /.exec(stdout);
  expect(match, stdout).not.toBeNull();
  return Number(match![1]);
}

function pskUri(port: number, file = sandbox.path('keys.psk')): string {
  return `nbds://backup@127.0.0.1:${port}/fss0?tls-psk-file=${file}`;
}

function x509Uri(port: number): string {
  return `nbds://127.0.0.1:${port}/fss0?tls-certificates=${sandbox.path('client')}`;
}

async function refusesConnections(port: number): Promise<boolean> {
  const result = await runCommand('nbdinfo', [`nbd://127.0.0.1:${port}/fss0`]);
  return result.status !== 0 && /refused/i.test(result.stderr);
}

/** Configures fss0 on the image and returns the model: the image at that moment. */
async function configure(): Promise<Buffer> {
  const set = await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'backup']);
  expect(set.status, set.stderr).toBe(0);
  return readFileSync(sandbox.path('image'));
}

const writesArbitrary = fc.array(
  fc
    .record({
      offset: fc.integer({ min: 0, max: IMAGE_BYTES - 1 }),
      length: fc.integer({ min: 1, max: 300_000 }),
      seed: fc.integer({ min: 1, max: 2 ** 30 }),
    })
    .map((write) => ({ ...write, length: Math.min(write.length, IMAGE_BYTES - write.offset) })),
  { minLength: 1, maxLength: 16 },
);

describe.skipIf(missing.length > 0)(`fss export --tcp (needs ${TOOLS.join(', ')})`, () => {
  it('PSK and x509: nbdcopy reads the snapshot equal to its model after random origin writes', async () => {
    await configure();
    const client = await FssClient.connect({ runDir: sandbox.runDir, autostart: false });
    try {
      await fc.assert(
        fc.asyncProperty(writesArbitrary, fc.boolean(), async (writes, x509) => {
          // A fresh snapshot each run: its model is the image right now.
          await client.clear('fss0');
          await client.set('fss0', {
            fss_mount: sandbox.path('image'),
            fss_bstore: sandbox.path('backup'),
            fss_csize: 0,
            fss_flags: 0,
          });
          const model = readFileSync(sandbox.path('image'));
          const info = await client.tcpExport(
            x509
              ? { unit: 'fss0', host: '127.0.0.1', port: 0, tls: 'x509', certs: sandbox.path('tls') }
              : { unit: 'fss0', host: '127.0.0.1', port: 0, tls: 'psk', psk: sandbox.path('keys.psk') },
          );
          const origin = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
          try {
            await Promise.all(
              writes.map((write) => origin.write(write.offset, pattern(write.length, write.seed))),
            );
            await origin.flush();
          } finally {
            origin.disconnect();
            await origin.whenClosed();
          }
          const out = sandbox.path('copy.img');
          const copy = await runCommand('nbdcopy', [x509 ? x509Uri(info.port) : pskUri(info.port), out]);
          expect(copy.status, copy.stderr).toBe(0);
          expect(Buffer.compare(readFileSync(out), model)).toBe(0);
          await client.tcpUnexport('fss0');
        }),
        { numRuns: RUNS },
      );
    } finally {
      client.close();
    }
  });

  it('status lists the listener; a second export is EBUSY; --stop closes the port; -u closes it too', async () => {
    await configure();
    const started = await sandbox.run('fss', [
      'export',
      'fss0',
      '--tcp',
      '127.0.0.1:0',
      '--tls-psk',
      'keys.psk',
    ]);
    expect(started.status, started.stderr).toBe(0);
    const port = portOf(started.stdout);
    expect(started.stdout).toBe(`fss0: nbds://127.0.0.1:${port}/fss0 (tls psk, 0 clients)\n`);

    const status = await sandbox.run('fss', ['status']);
    expect(status.stdout).toContain(`\n    tcp nbds://127.0.0.1:${port}/fss0 (tls psk, 0 clients)\n`);
    const json = JSON.parse((await sandbox.run('fss', ['status', '--json'])).stdout);
    // The shipped schema (strict) knows the key and its shape.
    expect(validateStatus(json), JSON.stringify(validateStatus.errors)).toBe(true);
    expect(json.units[0].tcp).toEqual({
      url: `nbds://127.0.0.1:${port}/fss0`,
      host: '127.0.0.1',
      port,
      tls: 'psk',
      verifyPeer: false,
      clients: 0,
    });

    const again = await sandbox.run('fss', ['export', 'fss0', '--tcp', '127.0.0.1:0', '--insecure']);
    expect(again.status).toBe(1);
    expect(again.stderr).toBe(
      'fss: export fss0: Device or resource busy\n' +
        `fss: export fss0: fss0 is already exported on nbds://127.0.0.1:${port}/fss0; stop it first (fss export --stop fss0)\n`,
    );

    const info = await runCommand('nbdinfo', ['--json', pskUri(port)]);
    expect(info.status, info.stderr).toBe(0);
    expect(JSON.parse(info.stdout).exports[0]).toMatchObject({
      is_read_only: true,
      'export-size': IMAGE_BYTES,
    });

    expect((await sandbox.run('fss', ['export', '--stop', 'fss0'])).status).toBe(0);
    expect(await refusesConnections(port)).toBe(true);
    const twice = await sandbox.run('fss', ['export', '--stop', 'fss0']);
    expect(twice).toMatchObject({
      status: 1,
      stderr:
        'fss: export --stop fss0: No such file or directory\nfss: export --stop fss0: fss0 has no TCP export\n',
    });

    const restarted = await sandbox.run('fss', [
      'export',
      'fss0',
      '--tcp',
      '127.0.0.1:0',
      '--tls-certs',
      'tls',
    ]);
    expect(restarted.stdout).toMatch(/ \(tls x509, 0 clients\)\n$/);
    const secondPort = portOf(restarted.stdout);
    expect((await sandbox.run('fssconfig', ['-u', 'fss0'])).status).toBe(0);
    expect(await refusesConnections(secondPort)).toBe(true);
    const after = JSON.parse((await sandbox.run('fss', ['status', '--json'])).stdout);
    expect(after.units).toEqual([]);
  });

  it('the snapshot stays read-only over TCP: qemu-io cannot write it', async () => {
    const model = await configure();
    const started = await sandbox.run('fss', [
      'export',
      'fss0',
      '--tcp',
      '127.0.0.1:0',
      '--tls-certs',
      'tls',
    ]);
    const port = portOf(started.stdout);
    const write = await runCommand('qemu-io', [
      '--object',
      `tls-creds-x509,id=tls0,dir=${sandbox.path('client')},endpoint=client`,
      '--image-opts',
      `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=fss0,tls-creds=tls0`,
      '-c',
      'write -P 0xee 0 64k',
    ]);
    expect(write.status + write.stdout + write.stderr).toMatch(
      /read-only|Operation not permitted|Permission denied/i,
    );
    const out = sandbox.path('after.img');
    expect((await runCommand('nbdcopy', [x509Uri(port), out])).status).toBe(0);
    expect(Buffer.compare(readFileSync(out), model)).toBe(0);
  });

  it('refuses a plaintext client and a wrong key; serves plaintext only with --insecure', async () => {
    await configure();
    const started = await sandbox.run('fss', [
      'export',
      'fss0',
      '--tcp',
      '127.0.0.1:0',
      '--tls-psk',
      'keys.psk',
    ]);
    const port = portOf(started.stdout);
    const plain = await runCommand('nbdinfo', [`nbd://127.0.0.1:${port}/fss0`]);
    expect(plain.status).not.toBe(0);
    expect(plain.stdout).not.toContain('export-size');
    const wrong = await runCommand('nbdinfo', [pskUri(port, sandbox.path('wrong.psk'))]);
    expect(wrong.status).not.toBe(0);
    expect(wrong.stderr).toMatch(/gnutls_handshake/);
    // The client gives up as soon as its handshake fails; the daemon logs its side of it
    // a moment later (a CI run read the log first).
    const log = () => readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8');
    await waitFor(() => /fss0: tcp: .*TLS handshake failed/.test(log()));
    expect(log()).toMatch(/fss0: tcp: .*TLS handshake failed/);

    expect((await sandbox.run('fss', ['export', '--stop', 'fss0'])).status).toBe(0);
    const insecure = await sandbox.run('fss', ['export', 'fss0', '--tcp', '127.0.0.1:0', '--insecure']);
    expect(insecure.stdout).toMatch(
      /^fss0: nbd:\/\/127\.0\.0\.1:\d+\/fss0 \(no tls: plaintext, 0 clients\)\n$/,
    );
    const open = await runCommand('nbdinfo', [`nbd://127.0.0.1:${portOf(insecure.stdout)}/fss0`]);
    expect(open.status, open.stderr).toBe(0);
  });
});

describe('fss export: bad requests', () => {
  it('names the problem: no TLS choice, two choices, a bad address, a bare --tls-verify-peer', async () => {
    const cases: Array<[string[], string]> = [
      [
        ['fss0', '--tcp', '127.0.0.1:10809'],
        'a TCP export needs TLS: --tls-certs DIR or --tls-psk FILE (--insecure for plaintext)',
      ],
      [
        ['fss0', '--tcp', '127.0.0.1:10809', '--insecure', '--tls-psk', 'k'],
        'choose one of --tls-certs, --tls-psk and --insecure',
      ],
      [
        ['fss0', '--tcp', '127.0.0.1', '--insecure'],
        '--tcp 127.0.0.1: not ADDR:PORT with a port in 0..65535 (e.g. 192.0.2.10:10809, [::1]:10809)',
      ],
      [
        ['fss0', '--tcp', '127.0.0.1:65536', '--insecure'],
        '--tcp 127.0.0.1:65536: not ADDR:PORT with a port in 0..65535 (e.g. 192.0.2.10:10809, [::1]:10809)',
      ],
      [
        ['fss0', '--tcp', '::1:80', '--insecure'],
        '--tcp ::1:80: not ADDR:PORT with a port in 0..65535 (e.g. 192.0.2.10:10809, [::1]:10809)',
      ],
      [
        ['fss0', '--tcp', '127.0.0.1:1', '--tls-psk', 'k', '--tls-verify-peer'],
        '--tls-verify-peer goes with --tls-certs',
      ],
    ];
    for (const [args, detail] of cases) {
      const result = await sandbox.run('fss', ['export', ...args]);
      expect(result, args.join(' ')).toMatchObject({
        status: 1,
        stdout: '',
        stderr: `fss: export: Invalid argument\nfss: export: ${detail}\n`,
      });
    }
    for (const args of [
      ['fss0'],
      ['--tcp', '127.0.0.1:1', '--insecure'],
      ['--stop', 'fss0', '--insecure'],
      ['fss0', '--bogus'],
    ]) {
      const result = await sandbox.run('fss', ['export', ...args]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/^usage: fss origin add/);
    }
  });

  it.skipIf(missing.length > 0)(
    'an unconfigured unit is ENXIO, missing credentials ENOENT, a port in use EADDRINUSE',
    async () => {
      const idle = await sandbox.run('fss', ['export', 'fss1', '--tcp', '127.0.0.1:0', '--insecure']);
      expect(idle.stderr).toBe(
        'fss: export fss1: No such device or address\nfss: export fss1: fss1 is not configured\n',
      );
      await configure();
      const noCerts = await sandbox.run('fss', [
        'export',
        'fss0',
        '--tcp',
        '127.0.0.1:0',
        '--tls-certs',
        'nowhere',
      ]);
      expect(noCerts.status).toBe(1);
      expect(noCerts.stderr).toMatch(/^fss: export fss0: No such file or directory\n/);
      expect(noCerts.stderr).toContain(`fss: export fss0: cannot read ${join(sandbox.dir, 'nowhere')}/`);
      const taken = createServer();
      await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
      try {
        const port = (taken.address() as { port: number }).port;
        const busy = await sandbox.run('fss', [
          'export',
          'fss0',
          '--tcp',
          `127.0.0.1:${port}`,
          '--tls-psk',
          'keys.psk',
        ]);
        expect(busy.status).toBe(1);
        expect(busy.stderr).toMatch(/^fss: export fss0: Address already in use\n/);
      } finally {
        taken.close();
      }
      // Nothing was left listening by the refusals: a good request still works.
      const good = await sandbox.run('fss', [
        'export',
        'fss0',
        '--tcp',
        '127.0.0.1:0',
        '--tls-psk',
        'keys.psk',
      ]);
      expect(good.status, good.stderr).toBe(0);
    },
  );
});
