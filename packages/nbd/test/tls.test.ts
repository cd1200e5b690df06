/**
 * NBD over TLS (STARTTLS, TLS-required mode) on 127.0.0.1, with stock clients.
 *
 * Goal, and method:
 *   - data: a snapshot read with nbdcopy over `nbds://` (x509 and PSK) and compared by
 *     qemu-img over TLS equals its model, a copy of the device taken at snapshot time, after
 *     random writes (fast-check) through the origin;
 *   - refusals: a wrong PSK key, an unknown PSK user, a server certificate from a CA the
 *     client does not trust, a client certificate the server does not trust (verifyPeer) or
 *     none at all, and a plaintext client are refused (exit codes, messages, no data);
 *   - the protocol, byte by byte: options before STARTTLS get ERR_TLS_REQD, EXPORT_NAME
 *     before it closes, STARTTLS with data is ERR_INVALID, STARTTLS inside TLS is ERR_INVALID,
 *     the options after the upgrade are answered inside TLS;
 *   - credentials files: missing, not PEM, key not matching, PSK lines that cannot be used.
 *
 * Certificates and keys are made at test time (openssl) in a temporary directory.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { MemoryBackingStore, MemoryBlockDevice } from '@fss/core';
import { Origin, type Snapshot } from '@fss/engine';
import { hasProgram, makeCa, makeCertificate, makePskFile, pattern, tempDir } from '@fss/test-utils';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Option, Reply } from '../src/protocol';
import { NbdServer } from '../src/server';
import {
  loadPskCredentials,
  loadX509Credentials,
  type NbdTlsCredentials,
  parsePskFile,
} from '../src/tls-credentials';
import { run } from './helpers';
import { goData, RawClient, RawSocket } from './raw-client';

const MiB = 1024 * 1024;
const DEVICE_BYTES = 4 * MiB;
const RUNS = Math.min(Number(process.env.FSS_PROPERTY_RUNS ?? 4), 8);
const TOOLS = ['openssl', 'nbdinfo', 'nbdcopy', 'qemu-img'];
const missing = TOOLS.filter((tool) => !hasProgram(tool));

let dir: ReturnType<typeof tempDir>;
/** Server certificates (trusted CA), a client's view of them, and a stranger's CA. */
let paths: {
  server: string;
  client: string;
  untrustedClient: string;
  strangerView: string;
  psk: string;
  wrongPsk: string;
};

beforeAll(() => {
  if (missing.length > 0) return;
  dir = tempDir('fss-nbd-tls-');
  const at = (name: string): string => join(dir.path, name);
  makeCa(at('ca'), 'fss test CA');
  makeCa(at('stranger-ca'), 'a CA nobody trusts');
  makeCertificate(at('ca'), at('server'), 'server');
  makeCertificate(at('ca'), at('client'), 'client');
  // A client certificate signed by the stranger, but trusting the real CA for the server.
  makeCertificate(at('stranger-ca'), at('untrusted-client'), 'client');
  writeFileSync(at('untrusted-client/ca-cert.pem'), readFileSync(at('ca/ca-cert.pem')));
  // A client that trusts only the stranger: the server's certificate is untrusted to it.
  makeCertificate(at('stranger-ca'), at('stranger-view'), 'client');
  makePskFile(at('keys.psk'), 'alice');
  makePskFile(at('wrong.psk'), 'alice');
  paths = {
    server: at('server'),
    client: at('client'),
    untrustedClient: at('untrusted-client'),
    strangerView: at('stranger-view'),
    psk: at('keys.psk'),
    wrongPsk: at('wrong.psk'),
  };
});
afterAll(() => dir?.remove());

interface Served {
  origin: Origin;
  snapshot: Snapshot;
  /** The device as it was when the snapshot was taken. */
  model: Uint8Array;
  server: NbdServer;
  port: number;
  logs: string[];
}

let serial = 0;
let served: Served | undefined;
/** Everything serveSnapshot started and nobody closed yet (a failed property run leaves some). */
const running: Served[] = [];

async function closeServed(each: Served): Promise<void> {
  const index = running.indexOf(each);
  if (index >= 0) running.splice(index, 1);
  await each.server.close();
  await each.snapshot.close();
  await each.origin.close();
}

/** A patterned device, its origin and snapshot, the snapshot served over TCP with `tls`. */
async function serveSnapshot(tls: NbdTlsCredentials | undefined): Promise<Served> {
  serial++;
  const device = new MemoryBlockDevice(pattern(DEVICE_BYTES, serial));
  const origin = new Origin(device, { name: `disk${serial}`, logger: () => {} });
  const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: 'fss0' });
  const model = device.bytes.slice();
  const logs: string[] = [];
  const server = new NbdServer({
    exports: [{ name: 'fss0', device: snapshot }],
    tls,
    log: (message) => logs.push(message),
    debug: (message) => logs.push(message),
  });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  served = { origin, snapshot, model, server, port: 'port' in address ? address.port : 0, logs };
  running.push(served);
  return served;
}

afterEach(async () => {
  served = undefined;
  for (const each of [...running]) await closeServed(each);
});

function x509Uri(port: number, certificates: string): string {
  return `nbds://127.0.0.1:${port}/fss0?tls-certificates=${certificates}`;
}

function pskUri(port: number, user: string, file: string): string {
  return `nbds://${user}@127.0.0.1:${port}/fss0?tls-psk-file=${file}`;
}

/** Writes `writes` through the origin (copy-on-write keeps the snapshot as it was). */
async function writeThroughOrigin(
  origin: Origin,
  writes: { offset: number; length: number; seed: number }[],
) {
  for (const { offset, length, seed } of writes) {
    await origin.write(pattern(length, seed), offset);
  }
}

const writesArbitrary = fc.array(
  fc.record({
    offset: fc.integer({ min: 0, max: DEVICE_BYTES / 512 - 1 }).map((sector) => sector * 512),
    length: fc.integer({ min: 1, max: 256 }).map((sectors) => sectors * 512),
    seed: fc.integer({ min: 1, max: 2 ** 30 }),
  }),
  { minLength: 1, maxLength: 24 },
);

function clampWrites(writes: { offset: number; length: number; seed: number }[]) {
  return writes.map((write) => ({ ...write, length: Math.min(write.length, DEVICE_BYTES - write.offset) }));
}

describe.skipIf(missing.length > 0)(`stock clients over TLS (needs ${TOOLS.join(', ')})`, () => {
  it('nbdcopy over nbds:// with x509 certificates reads the snapshot equal to its model', async () => {
    await fc.assert(
      fc.asyncProperty(writesArbitrary, async (writes) => {
        const one = await serveSnapshot(await loadX509Credentials(paths.server));
        const { origin, model, port } = one;
        await writeThroughOrigin(origin, clampWrites(writes));
        const out = join(dir.path, `x509-${serial}.img`);
        const copy = await run('nbdcopy', [x509Uri(port, paths.client), out]);
        expect(copy.code, copy.stderr).toBe(0);
        expect(Buffer.compare(readFileSync(out), Buffer.from(model))).toBe(0);
        await closeServed(one);
      }),
      { numRuns: RUNS },
    );
  });

  it('nbdcopy over nbds:// with a PSK key file reads the snapshot equal to its model', async () => {
    await fc.assert(
      fc.asyncProperty(writesArbitrary, async (writes) => {
        const one = await serveSnapshot(await loadPskCredentials(paths.psk));
        const { origin, model, port } = one;
        await writeThroughOrigin(origin, clampWrites(writes));
        const out = join(dir.path, `psk-${serial}.img`);
        const copy = await run('nbdcopy', [pskUri(port, 'alice', paths.psk), out]);
        expect(copy.code, copy.stderr).toBe(0);
        expect(Buffer.compare(readFileSync(out), Buffer.from(model))).toBe(0);
        await closeServed(one);
      }),
      { numRuns: RUNS },
    );
  });

  it('nbdinfo reports TLS and the read-only snapshot; qemu-img compares it equal to the model over TLS', async () => {
    const { origin, model, port } = await serveSnapshot(await loadX509Credentials(paths.server));
    await origin.write(pattern(MiB, 99), MiB);
    const info = await run('nbdinfo', ['--json', x509Uri(port, paths.client)]);
    expect(info.code, info.stderr).toBe(0);
    const parsed = JSON.parse(info.stdout);
    expect(parsed.TLS).toBe(true);
    expect(parsed.exports[0]).toMatchObject({
      'export-name': 'fss0',
      'export-size': DEVICE_BYTES,
      is_read_only: true,
    });
    const modelPath = join(dir.path, `model-${serial}.img`);
    writeFileSync(modelPath, model);
    const compare = await run('qemu-img', [
      'compare',
      '--object',
      `tls-creds-x509,id=tls0,dir=${paths.client},endpoint=client`,
      '--image-opts',
      `driver=raw,file.driver=file,file.filename=${modelPath}`,
      `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=fss0,tls-creds=tls0`,
    ]);
    expect(compare.code, compare.stderr + compare.stdout).toBe(0);
    expect(compare.stdout).toContain('Images are identical');
  });

  it('a wrong PSK key and an unknown PSK user are refused', async () => {
    const { port, logs } = await serveSnapshot(await loadPskCredentials(paths.psk));
    const wrong = await run('nbdinfo', [pskUri(port, 'alice', paths.wrongPsk)]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/gnutls_handshake/);
    const bob = join(dir.path, 'bob.psk');
    writeFileSync(bob, readFileSync(paths.psk, 'utf8').replace('alice', 'bob'));
    const unknown = await run('nbdinfo', [pskUri(port, 'bob', bob)]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/gnutls_handshake/);
    expect(logs.filter((line) => line.includes('TLS handshake failed'))).toHaveLength(2);
    // The right key still works on the same server.
    const right = await run('nbdinfo', [pskUri(port, 'alice', paths.psk)]);
    expect(right.code, right.stderr).toBe(0);
  });

  it('a client that does not trust the server certificate refuses it', async () => {
    const { port } = await serveSnapshot(await loadX509Credentials(paths.server));
    const result = await run('nbdinfo', [x509Uri(port, paths.strangerView)]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/certificate verification/i);
  });

  it('with verifyPeer, a client certificate from another CA, or none, is refused', async () => {
    const { port, logs } = await serveSnapshot(await loadX509Credentials(paths.server, { verifyPeer: true }));
    const untrusted = await run('nbdinfo', [x509Uri(port, paths.untrustedClient)]);
    expect(untrusted.code).not.toBe(0);
    // Trusts the server, has no certificate of its own.
    const withoutCertificate = join(dir.path, 'ca-only');
    mkdirSync(withoutCertificate, { recursive: true });
    copyFileSync(join(paths.server, 'ca-cert.pem'), join(withoutCertificate, 'ca-cert.pem'));
    const none = await run('nbdinfo', [x509Uri(port, withoutCertificate)]);
    expect(none.code).not.toBe(0);
    expect(logs.join('\n')).toMatch(/peer did not return a certificate/);
    const trusted = await run('nbdinfo', [x509Uri(port, paths.client)]);
    expect(trusted.code, trusted.stderr).toBe(0);
  });

  it('a plaintext client is refused when TLS is required', async () => {
    const { port } = await serveSnapshot(await loadPskCredentials(paths.psk));
    const result = await run('nbdinfo', [`nbd://127.0.0.1:${port}/fss0`]);
    expect(result.code).not.toBe(0);
    // It learns the protocol, no export: GO (and everything else) got ERR_TLS_REQD.
    expect(result.stdout).not.toContain('export-size');
    expect(result.stderr).toMatch(/opt_go/);
    const copy = await run('nbdcopy', [`nbd://127.0.0.1:${port}/fss0`, join(dir.path, 'plain.img')]);
    expect(copy.code).not.toBe(0);
  });
});

/** Starts TLS (PSK, alice) on a raw client's socket after STARTTLS was acknowledged. */
async function startClientTls(raw: RawSocket, key: Buffer): Promise<RawClient> {
  const secure = await new Promise<TLSSocket>((resolve, reject) => {
    const socket = tlsConnect({
      socket: raw.socket,
      ciphers: 'PSK',
      pskCallback: () => ({ identity: 'alice', psk: key }),
      checkServerIdentity: () => undefined,
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
  return new RawClient(new RawSocket(secure));
}

async function waitForCount(server: NbdServer, count: number): Promise<void> {
  while (server.connectionCount !== count) await new Promise((resolve) => setTimeout(resolve, 10));
}

describe.skipIf(missing.length > 0)('STARTTLS, byte by byte', () => {
  it('options before STARTTLS get ERR_TLS_REQD; after it they are answered inside TLS', async () => {
    const { port } = await serveSnapshot(await loadPskCredentials(paths.psk));
    const { client } = await RawClient.handshake({ host: '127.0.0.1', port });
    for (const option of [Option.LIST, Option.INFO, Option.GO, Option.STRUCTURED_REPLY, 4242]) {
      client.sendOption(
        option,
        option === Option.INFO || option === Option.GO ? goData('fss0', []) : undefined,
      );
      const reply = (await client.readOptionReplies()).at(-1)!;
      expect(reply.option).toBe(option);
      expect(reply.type).toBe(Reply.ERR_TLS_REQD);
    }
    client.sendOption(Option.STARTTLS, Buffer.from([1]));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ERR_INVALID);
    client.sendOption(Option.STARTTLS);
    expect((await client.readOptionReply())!.type).toBe(Reply.ACK);
    const key = parsePskFile(readFileSync(paths.psk, 'utf8'), paths.psk).get('alice')!;
    const secure = await startClientTls(client.raw, key);
    secure.sendOption(Option.STARTTLS);
    expect((await secure.readOptionReplies()).at(-1)!.type).toBe(Reply.ERR_INVALID);
    secure.sendOption(Option.GO, goData('fss0', []));
    expect((await secure.readOptionReplies()).at(-1)!.type).toBe(Reply.ACK);
    secure.sendRequest(0 /* READ */, 0, 4096);
    const reply = await secure.readReply(4096);
    expect(reply!.error).toBe(0);
    expect(Buffer.compare(reply!.payload, Buffer.from(served!.model.subarray(0, 4096)))).toBe(0);
    secure.close();
  });

  it('EXPORT_NAME before STARTTLS closes the connection; ABORT is acknowledged', async () => {
    const { port } = await serveSnapshot(await loadPskCredentials(paths.psk));
    const first = await RawClient.handshake({ host: '127.0.0.1', port });
    first.client.sendOption(Option.EXPORT_NAME, Buffer.from('fss0'));
    expect(await first.client.raw.read(1)).toBeUndefined();
    const second = await RawClient.handshake({ host: '127.0.0.1', port });
    second.client.sendOption(Option.ABORT);
    expect((await second.client.readOptionReply())!.type).toBe(Reply.ACK);
    expect(await second.client.raw.closed()).toBe(true);
  });

  it('a client that goes silent after STARTTLS is disconnected by the handshake timeout', async () => {
    const { server } = await serveSnapshot(undefined);
    await server.close();
    const quick = new NbdServer({
      exports: [{ name: 'fss0', device: served!.snapshot }],
      tls: await loadPskCredentials(paths.psk),
      handshakeTimeoutMs: 200,
    });
    const address = await quick.listen({ host: '127.0.0.1', port: 0 });
    try {
      const { client } = await RawClient.handshake(address as { host: string; port: number });
      client.sendOption(Option.STARTTLS);
      expect((await client.readOptionReply())!.type).toBe(Reply.ACK);
      expect(await client.raw.closed()).toBe(true);
      await waitForCount(quick, 0);
    } finally {
      await quick.close();
    }
  });

  it('a server without credentials answers STARTTLS with ERR_UNSUP and serves in the clear', async () => {
    const { port } = await serveSnapshot(undefined);
    const { client } = await RawClient.handshake({ host: '127.0.0.1', port });
    client.sendOption(Option.STARTTLS);
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ERR_UNSUP);
    client.sendOption(Option.GO, goData('fss0', []));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ACK);
    client.close();
  });
});

describe('TLS credentials files', () => {
  beforeEach(() => {
    dir ??= tempDir('fss-nbd-tls-');
  });

  it('parses psktool lines and names the line of one it cannot use (EINVAL)', () => {
    const keys = parsePskFile('alice:00ff10\n\nbob:ABCD\r\n', 'keys.psk');
    expect([...keys.keys()]).toEqual(['alice', 'bob']);
    expect(keys.get('alice')).toEqual(Buffer.from([0, 255, 16]));
    const bad = [
      ['no colon here', 'line 1: not username:hexkey'],
      [':00ff', 'line 1: not username:hexkey'],
      ['alice:xyz', 'line 1: key is not an even number of hex digits'],
      ['alice:abc', 'line 1: key is not an even number of hex digits'],
      ['alice:00\nalice:11', "line 2: username 'alice' appears twice"],
      ['\n\n', 'no keys in the file'],
    ];
    for (const [text, message] of bad) {
      expect(() => parsePskFile(text as string, 'keys.psk')).toThrow(
        expect.objectContaining({ code: 'EINVAL', description: message, path: 'keys.psk' }),
      );
    }
  });

  it('a missing file is ENOENT naming it; a directory without PEM files or with a mismatched key is EINVAL', async () => {
    await expect(loadPskCredentials(join(dir.path, 'nope.psk'))).rejects.toMatchObject({
      code: 'ENOENT',
      path: join(dir.path, 'nope.psk'),
    });
    await expect(loadX509Credentials(join(dir.path, 'nope'))).rejects.toMatchObject({ code: 'ENOENT' });
    const notPem = join(dir.path, 'not-pem');
    mkdirSync(notPem, { recursive: true });
    for (const name of ['ca-cert.pem', 'server-cert.pem', 'server-key.pem'])
      writeFileSync(join(notPem, name), 'x');
    await expect(loadX509Credentials(notPem)).rejects.toMatchObject({
      code: 'EINVAL',
      description: 'not a PEM file',
    });
  });

  it.skipIf(missing.length > 0)('a key that does not belong to the certificate is EINVAL', async () => {
    const mixed = join(dir.path, 'mixed');
    makeCertificate(join(dir.path, 'ca'), mixed, 'server');
    writeFileSync(join(mixed, 'server-key.pem'), readFileSync(join(dir.path, 'client', 'client-key.pem')));
    await expect(loadX509Credentials(mixed)).rejects.toMatchObject({
      code: 'EINVAL',
      description: expect.stringMatching(/^unusable certificates: /),
    });
  });
});
