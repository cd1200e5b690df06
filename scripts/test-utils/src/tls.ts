/**
 * TLS credentials made at test time with openssl (scripts/install.sh installs it): a CA and
 * a server certificate for 127.0.0.1 and localhost in the qemu-nbd/nbdkit directory layout
 * (ca-cert.pem, server-cert.pem, server-key.pem), a client certificate in libnbd's layout
 * (ca-cert.pem, client-cert.pem, client-key.pem), and psktool-style key files
 * (`username:hexkey`). Nothing is reused between runs; every file is in the caller's directory.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA (`ca-cert.pem`, `ca-key.pem`) in `dir`. */
export function makeCa(dir: string, name: string): void {
  mkdirSync(dir, { recursive: true });
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca-key.pem'], dir);
  openssl(
    [
      'req',
      '-new',
      '-x509',
      '-key',
      'ca-key.pem',
      '-out',
      'ca-cert.pem',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
    ],
    dir,
  );
}

/**
 * A certificate `ROLE-cert.pem`/`ROLE-key.pem` in `dir` signed by the CA in `caDir`, with the
 * CA's certificate copied beside it as `ca-cert.pem` (the layout servers and libnbd expect).
 */
export function makeCertificate(caDir: string, dir: string, role: 'server' | 'client'): void {
  mkdirSync(dir, { recursive: true });
  const ext = join(dir, `${role}.ext`);
  writeFileSync(
    ext,
    role === 'server'
      ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
      : 'extendedKeyUsage=clientAuth\n',
  );
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${role}-key.pem`], dir);
  openssl(
    ['req', '-new', '-key', `${role}-key.pem`, '-out', `${role}.csr`, '-subj', `/CN=fss-test-${role}`],
    dir,
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      `${role}.csr`,
      '-CA',
      join(caDir, 'ca-cert.pem'),
      '-CAkey',
      join(caDir, 'ca-key.pem'),
      '-CAcreateserial',
      '-out',
      `${role}-cert.pem`,
      '-days',
      '2',
      '-extfile',
      ext,
    ],
    dir,
  );
  execFileSync('cp', [join(caDir, 'ca-cert.pem'), join(dir, 'ca-cert.pem')]);
}

/** A psktool-style key file with one random 32-byte key for `username`; returns its path. */
export function makePskFile(path: string, username: string): string {
  writeFileSync(path, `${username}:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return path;
}
