import { FssError } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { parseExportArgs, parseTcpAddress } from './export-args';

describe('parseTcpAddress', () => {
  it('takes HOST:PORT and [IPV6]:PORT with a port in 0..65535', () => {
    expect(parseTcpAddress('127.0.0.1:10809')).toEqual({ host: '127.0.0.1', port: 10809 });
    expect(parseTcpAddress('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseTcpAddress('backup.example:65535')).toEqual({ host: 'backup.example', port: 65535 });
    for (const bad of ['127.0.0.1', ':10809', '::1:10809', '[::1]', 'host:65536', 'host:-1', 'host:1x', '']) {
      const result = parseTcpAddress(bad);
      expect(result, bad).toBeInstanceOf(FssError);
      expect((result as FssError).code).toBe('EINVAL');
    }
  });
});

describe('parseExportArgs', () => {
  it('resolves credential paths, takes options in any order and in --flag=value form', () => {
    expect(
      parseExportArgs(['--tls-certs=/etc/fss', 'fss2', '--tls-verify-peer', '--tcp', '[::1]:10809']),
    ).toEqual({
      kind: 'start',
      request: { unit: 'fss2', host: '::1', port: 10809, tls: 'x509', certs: '/etc/fss', verify_peer: true },
    });
    const psk = parseExportArgs(['fss0', '--tcp=10.0.0.1:1', '--tls-psk', 'keys.psk']);
    expect(psk).toMatchObject({ kind: 'start', request: { tls: 'psk', psk: `${process.cwd()}/keys.psk` } });
    expect(parseExportArgs(['fss0', '--tcp', '10.0.0.1:1', '--insecure'])).toEqual({
      kind: 'start',
      request: { unit: 'fss0', host: '10.0.0.1', port: 1, tls: 'none' },
    });
    expect(parseExportArgs(['--stop', 'fss0'])).toEqual({ kind: 'stop', unit: 'fss0' });
  });

  it('is usage for a shape that is not the synopsis', () => {
    for (const args of [
      [],
      ['fss0'],
      ['fss0', 'fss1', '--tcp', 'h:1', '--insecure'],
      ['fss0', '--tcp'],
      ['fss0', '--tcp', '', '--insecure'],
      ['--stop'],
      ['--stop', 'fss0', '--tcp', 'h:1'],
      ['fss0', '--tcp', 'h:1', '--insecure', '--tcp', 'h:2'],
      ['fss0', '--insecure=yes', '--tcp', 'h:1'],
    ]) {
      expect(parseExportArgs(args), args.join(' ')).toBe('usage');
    }
  });
});
