import { FSSIOCCLR, FSSIOCSET, isFssError } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { LineSplitter } from './lines';
import { requestIdOf, toWireError, validateRequest } from './messages';

const set = { fss_mount: '/img', fss_bstore: '/bak', fss_csize: 0, fss_flags: 0 };

function code(request: unknown): string {
  try {
    validateRequest(request);
    return 'ok';
  } catch (error) {
    return isFssError(error) ? error.code : String(error);
  }
}

describe('validateRequest', () => {
  it('accepts the five ioctls by name, with or without their NetBSD number', () => {
    expect(
      validateRequest({ op: 'FSSIOCSET', unit: 'fss0', mode: 'rw', arg: set, request: FSSIOCSET }),
    ).toEqual({
      op: 'FSSIOCSET',
      unit: 'fss0',
      mode: 'rw',
      arg: set,
    });
    expect(validateRequest({ op: 'FSSIOCCLR', unit: 'fss1', request: FSSIOCCLR })).toEqual({
      op: 'FSSIOCCLR',
      unit: 'fss1',
      mode: 'ro',
    });
    expect(validateRequest({ op: 'FSSIOFSET', unit: 'fss0', arg: 3 })).toMatchObject({ arg: 3 });
    expect(validateRequest({ op: 'FSSIOCSET', unit: 'fss0', arg: set, backup_size: 4096 })).toMatchObject({
      backup_size: 4096,
    });
  });

  it('accepts tcp-export with x509, psk or an explicit none, and tcp-unexport', () => {
    const base = { op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 10809 };
    expect(validateRequest({ ...base, tls: 'x509', certs: '/etc/fss/tls', verify_peer: true })).toEqual({
      ...base,
      tls: 'x509',
      certs: '/etc/fss/tls',
      verify_peer: true,
    });
    expect(validateRequest({ ...base, host: '::1', tls: 'psk', psk: '/k.psk' })).toEqual({
      ...base,
      host: '::1',
      tls: 'psk',
      psk: '/k.psk',
    });
    expect(validateRequest({ ...base, port: 0, tls: 'none' })).toEqual({ ...base, port: 0, tls: 'none' });
    expect(validateRequest({ op: 'tcp-unexport', unit: 'fss0' })).toEqual({
      op: 'tcp-unexport',
      unit: 'fss0',
    });
  });

  it('accepts changed with and without since', () => {
    expect(validateRequest({ op: 'changed', unit: 'fss1' })).toEqual({ op: 'changed', unit: 'fss1' });
    expect(validateRequest({ id: 4, op: 'changed', unit: 'fss1', since: 'fss0' })).toEqual({
      op: 'changed',
      unit: 'fss1',
      since: 'fss0',
    });
  });

  it('takes the store-full policy on FSSIOCSET only, checked (Linux additions)', () => {
    const base = { op: 'FSSIOCSET', unit: 'fss0', mode: 'rw', arg: set };
    expect(validateRequest({ ...base, on_full: 'block', on_full_timeout_ms: 5000 })).toMatchObject({
      on_full: 'block',
      on_full_timeout_ms: 5000,
    });
    expect(validateRequest({ ...base, on_full: 'invalidate' })).toMatchObject({ on_full: 'invalidate' });
    const refused = (request: Record<string, unknown>) => {
      try {
        validateRequest(request);
        return 'ok';
      } catch (error) {
        return isFssError(error) ? `${error.code}: ${error.description}` : String(error);
      }
    };
    expect(refused({ ...base, on_full: 'wait' })).toBe(
      'EINVAL: FSSIOCSET: "on_full" must be "invalidate" or "block"',
    );
    expect(refused({ ...base, on_full_timeout_ms: 5000 })).toBe(
      'EINVAL: FSSIOCSET: "on_full_timeout_ms" needs "on_full":"block"',
    );
    expect(refused({ ...base, on_full: 'block', on_full_timeout_ms: 0 })).toMatch(
      /must be an integer in 1\.\.86400000/,
    );
    expect(refused({ ...base, on_full: 'block', on_full_timeout_ms: '5' })).toMatch(/^EINVAL/);
    expect(refused({ op: 'FSSIOCCLR', unit: 'fss0', on_full: 'block' })).toBe(
      'EINVAL: FSSIOCCLR: unexpected "on_full"',
    );
  });

  it('accepts rollback and rollback-status', () => {
    expect(validateRequest({ op: 'rollback', unit: 'fss0' })).toEqual({ op: 'rollback', unit: 'fss0' });
    expect(validateRequest({ id: 'x', op: 'rollback-status', unit: 'fss0' })).toEqual({
      op: 'rollback-status',
      unit: 'fss0',
    });
  });

  it.each([
    [null],
    [[]],
    ['FSSIOCGET'],
    [{}],
    [{ op: 'FSSIOCXXX', unit: 'fss0' }],
    [{ op: 'FSSIOCGET' }],
    [{ op: 'FSSIOCGET', unit: 0 }],
    [{ op: 'FSSIOCGET', unit: 'fss0', request: FSSIOCSET }],
    [{ op: 'FSSIOCGET', unit: 'fss0', mode: 'w' }],
    [{ op: 'FSSIOCGET', unit: 'fss0', arg: {} }],
    [{ op: 'FSSIOCGET', unit: 'fss0', surprise: 1 }],
    [{ op: 'FSSIOCGET', unit: 'fss0', backup_size: 1 }],
    [{ op: 'FSSIOCSET', unit: 'fss0', arg: { ...set, fss_csize: 2 ** 31 } }],
    [{ op: 'FSSIOCSET', unit: 'fss0', arg: { ...set, fss_flags: 0.5 } }],
    [{ op: 'FSSIOCSET', unit: 'fss0', arg: { ...set, extra: 1 } }],
    [{ op: 'FSSIOCSET', unit: 'fss0', arg: { fss_mount: '/img' } }],
    [{ op: 'FSSIOCSET', unit: 'fss0', arg: { ...set, fss_mount: 'a'.repeat(5000) } }],
    [{ op: 'FSSIOCSET', unit: 'fss0', arg: { ...set, fss_bstore: '/a\0b' } }],
    [{ op: 'FSSIOCSET', unit: 'fss0', arg: set, backup_size: -1 }],
    [{ op: 'FSSIOFSET', unit: 'fss0', arg: '1' }],
    [{ op: 'origin-add' }],
    [{ op: 'origin-add', path: '/x', name: 7 }],
    [{ op: 'origin-rm', name: 'x'.repeat(65) }],
    [{ op: 'status', verbose: true }],
    [{ op: 'changed' }],
    [{ op: 'changed', unit: 1 }],
    [{ op: 'changed', unit: 'fss1', since: 0 }],
    [{ op: 'changed', unit: 'fss1', json: true }],
    [{ op: 'changed', unit: 'x'.repeat(65) }],
    [{ op: 'rollback' }],
    [{ op: 'rollback', unit: 'fss0', force: true }],
    [{ op: 'rollback-status', unit: 3 }],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 1 }],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 1, tls: 'yes' }],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 65536, tls: 'none' }],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: -1, tls: 'none' }],
    [{ op: 'tcp-export', unit: 'fss0', host: '', port: 1, tls: 'none' }],
    [{ op: 'tcp-export', unit: 'fss0', host: '/tmp/sock', port: 1, tls: 'none' }],
    [{ op: 'tcp-export', unit: 'fss0', port: 1, tls: 'none' }],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 1, tls: 'x509' }],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 1, tls: 'psk' }],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 1, tls: 'none', psk: '/k' }],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 1, tls: 'psk', psk: '/k', certs: '/d' }],
    [
      {
        op: 'tcp-export',
        unit: 'fss0',
        host: '127.0.0.1',
        port: 1,
        tls: 'x509',
        certs: '/d',
        verify_peer: 1,
      },
    ],
    [{ op: 'tcp-export', unit: 'fss0', host: '127.0.0.1', port: 1, tls: 'none', insecure: true }],
    [{ op: 'tcp-unexport' }],
    [{ op: 'tcp-unexport', unit: 'fss0', host: '127.0.0.1' }],
  ])('EINVAL for %j', (request) => {
    expect(code(request)).toBe('EINVAL');
  });

  it('keeps usable ids and drops the rest', () => {
    expect(requestIdOf({ id: 7 })).toBe(7);
    expect(requestIdOf({ id: 'abc' })).toBe('abc');
    expect(requestIdOf({ id: 1.5 })).toBeNull();
    expect(requestIdOf({ id: 'x'.repeat(200) })).toBeNull();
    expect(requestIdOf('nope')).toBeNull();
  });

  it('puts errors on the wire as errno name, number, strerror and detail', () => {
    let thrown: unknown;
    try {
      validateRequest({ op: 'nope' });
    } catch (error) {
      thrown = error;
    }
    if (!isFssError(thrown)) throw new Error(`expected an FssError, got ${String(thrown)}`);
    expect(toWireError(thrown)).toEqual({
      code: 'EINVAL',
      errno: 22,
      message: 'Invalid argument',
      detail: 'unknown op "nope"',
      syscall: 'request',
    });
  });
});

describe('LineSplitter', () => {
  it('splits across chunks and enforces the limit', () => {
    const splitter = new LineSplitter(8);
    expect(splitter.push(Buffer.from('ab'))).toEqual({ lines: [], overflow: false });
    expect(splitter.push(Buffer.from('c\nde\n\nf'))).toEqual({ lines: ['abc', 'de', ''], overflow: false });
    expect(splitter.push(Buffer.from('g\n'))).toEqual({ lines: ['fg'], overflow: false });
    expect(splitter.push(Buffer.from('123456789'))).toEqual({ lines: [], overflow: true });
  });
});
