import { describe, expect, it } from 'vitest';
import { ERRNO, errnoCodeOf, strerror } from './errno';
import { FssError, isFssError, toFssError } from './errors';

describe('FssError', () => {
  it('carries code, errno, syscall and path, and says them in its message', () => {
    const error = new FssError('EBUSY', undefined, { syscall: 'open', path: '/dev/loop0' });
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe('EBUSY');
    expect(error.errno).toBe(16);
    expect(error.message).toBe("EBUSY: Device or resource busy, open '/dev/loop0'");
    expect(isFssError(error, 'EBUSY')).toBe(true);
    expect(isFssError(error, 'EIO')).toBe(false);
  });

  it('keeps the errno of a Node fs error and its cause', () => {
    const nodeError = Object.assign(new Error('ENOSPC: no space left on device, write'), {
      code: 'ENOSPC',
      errno: -28,
      syscall: 'write',
    });
    const error = toFssError(nodeError, { path: '/tmp/backup' });
    expect(error.code).toBe('ENOSPC');
    expect(error.syscall).toBe('write');
    expect(error.path).toBe('/tmp/backup');
    expect(error.cause).toBe(nodeError);
    expect(error.description).toBe('no space left on device');
    expect(toFssError(new Error('mystery')).code).toBe('EIO');
    expect(toFssError({ errno: -6 }).code).toBe('ENXIO');
  });

  it('maps every errno number back to one name', () => {
    const numbers = Object.values(ERRNO).map((entry) => entry.errno);
    expect(new Set(numbers).size).toBe(numbers.length);
    expect(errnoCodeOf(30)).toBe('EROFS');
    expect(strerror('ENXIO')).toBe('No such device or address');
  });
});
