/**
 * sd_notify without libsystemd: datagrams reach a socket bound at a path and at an abstract
 * name, byte for byte; no NOTIFY_SOCKET sends nothing; a socket nobody listens on is an
 * errno-shaped error (ECONNREFUSED or ENOENT), not a crash.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatagramReceiver, sdNotify, unixAddress } from '../src/index';

const dir = mkdtempSync(join(tmpdir(), 'fss-notify-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sdNotify', () => {
  it.each([join(dir, 'notify'), `@fss-notify-test-${process.pid}`])('reaches a receiver at %s', (name) => {
    const receiver = openDatagramReceiver(name);
    try {
      expect(receiver.receive()).toBeUndefined();
      expect(sdNotify('READY=1\nSTATUS=serving', { NOTIFY_SOCKET: name })).toBe(true);
      expect(sdNotify('STOPPING=1', { NOTIFY_SOCKET: name })).toBe(true);
      expect(receiver.receive()).toBe('READY=1\nSTATUS=serving');
      expect(receiver.receive()).toBe('STOPPING=1');
      expect(receiver.receive()).toBeUndefined();
    } finally {
      receiver.close();
    }
  });

  it('sends nothing without NOTIFY_SOCKET, and fails with an errno when nobody listens', () => {
    expect(sdNotify('READY=1', {})).toBe(false);
    expect(() => sdNotify('READY=1', { NOTIFY_SOCKET: join(dir, 'nobody') })).toThrow(
      expect.objectContaining({ code: 'ENOENT', syscall: 'sendto' }),
    );
    expect(() => unixAddress('x'.repeat(200))).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG' }));
  });
});
