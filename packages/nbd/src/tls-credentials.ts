/**
 * TLS credentials for NBD servers, read from the files qemu-nbd, nbdkit and libnbd use:
 *
 *   x509  a directory holding `ca-cert.pem`, `server-cert.pem` and `server-key.pem` (qemu's
 *         tls-creds-x509 and nbdkit's --tls-certificates layout). With `verifyPeer` clients
 *         must present a certificate signed by `ca-cert.pem` (nbdkit --tls-verify-peer;
 *         libnbd sends `client-cert.pem`/`client-key.pem` from its own directory).
 *   psk   a psktool key file: one `username:hexkey` per line (nbdkit --tls-psk, libnbd's
 *         tls-psk-file). The client names its identity; the key is looked up by it.
 *
 * Everything is read once, when the credentials are loaded: a listener never rereads files,
 * so a file changed afterwards changes nothing until the listener is started again. Problems
 * are FssErrors naming the file: ENOENT/EACCES from reading it, EINVAL for content that
 * cannot be used (a line without a colon, a key that is not hex, no key at all).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { FssError, toFssError } from '@fss/core';

export type NbdTlsCredentials =
  | {
      readonly kind: 'x509';
      /** PEM: the server's certificate (chain), its private key, and the CA. */
      readonly cert: Buffer;
      readonly key: Buffer;
      readonly ca: Buffer;
      /** Clients must present a certificate signed by `ca`. */
      readonly verifyPeer: boolean;
    }
  | {
      readonly kind: 'psk';
      /** Key by identity (username). */
      readonly keys: ReadonlyMap<string, Buffer>;
    };

/** The file names of the qemu-nbd/nbdkit certificate directory. */
export const X509_FILES = { ca: 'ca-cert.pem', cert: 'server-cert.pem', key: 'server-key.pem' } as const;

/** A PSK identity longer than this is refused (GnuTLS and OpenSSL both cap it at 128 bytes). */
const PSK_IDENTITY_BYTES_MAX = 128;
/** Longest key OpenSSL's PSK callback accepts (PSK_MAX_PSK_LEN). */
const PSK_KEY_BYTES_MAX = 512;

/** Reads the x509 directory `dir`. */
export async function loadX509Credentials(
  dir: string,
  options: { verifyPeer?: boolean } = {},
): Promise<NbdTlsCredentials> {
  const [ca, cert, key] = await Promise.all([
    readCredential(join(dir, X509_FILES.ca)),
    readCredential(join(dir, X509_FILES.cert)),
    readCredential(join(dir, X509_FILES.key)),
  ]);
  for (const [name, bytes] of [
    [X509_FILES.ca, ca],
    [X509_FILES.cert, cert],
    [X509_FILES.key, key],
  ] as const) {
    if (!bytes.includes('-----BEGIN ')) {
      throw new FssError('EINVAL', 'not a PEM file', { syscall: 'tls', path: join(dir, name) });
    }
  }
  try {
    // Parses all three now: a key that does not match its certificate is refused here, when
    // the listener is asked for, not at each client's handshake.
    createSecureContext({ ca, cert, key });
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new FssError('EINVAL', `unusable certificates: ${why}`, { syscall: 'tls', path: dir });
  }
  return { kind: 'x509', ca, cert, key, verifyPeer: options.verifyPeer === true };
}

/** Reads a psktool key file. */
export async function loadPskCredentials(path: string): Promise<NbdTlsCredentials> {
  return { kind: 'psk', keys: parsePskFile((await readCredential(path)).toString('utf8'), path) };
}

/** Parses `username:hexkey` lines (blank lines ignored); EINVAL names the line. */
export function parsePskFile(text: string, path: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = (lines[index] as string).replace(/\r$/, '');
    if (line.trim() === '') continue;
    const bad = (why: string): FssError =>
      new FssError('EINVAL', `line ${index + 1}: ${why}`, { syscall: 'tls-psk', path });
    const colon = line.indexOf(':');
    if (colon <= 0) throw bad('not username:hexkey');
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (Buffer.byteLength(identity) > PSK_IDENTITY_BYTES_MAX) {
      throw bad(`username longer than ${PSK_IDENTITY_BYTES_MAX} bytes`);
    }
    if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw bad('key is not an even number of hex digits');
    if (hex.length / 2 > PSK_KEY_BYTES_MAX) throw bad(`key longer than ${PSK_KEY_BYTES_MAX} bytes`);
    if (keys.has(identity)) throw bad(`username '${identity}' appears twice`);
    keys.set(identity, Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new FssError('EINVAL', 'no keys in the file', { syscall: 'tls-psk', path });
  return keys;
}

async function readCredential(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    // The description names the file: a caller that prints only it still says which one.
    const failure = toFssError(error, { syscall: 'open', path });
    throw new FssError(failure.code, `cannot read ${path}`, { syscall: 'open', path, cause: error });
  }
}
