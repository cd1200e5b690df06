import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  FSS_GET_BYTES,
  FSS_SET_BYTES,
  FSS_UNCONFIG_ON_CLOSE,
  FSS_UNLINK_ON_CREATE,
  FSSIOCCLR,
  FSSIOCGET,
  FSSIOCSET,
  FSSIOFGET,
  FSSIOFSET,
  type FssGet,
  ioctlName,
  timeValFromMs,
} from './ioctl';

describe('fss ioctl numbers (NetBSD LP64)', () => {
  it('encode to the values of fssvar.h', () => {
    expect(FSSIOCSET).toBe(0x80184605);
    expect(FSSIOCGET).toBe(0x40884601);
    expect(FSSIOCCLR).toBe(0x20004602);
    expect(FSSIOFSET).toBe(0x80044603);
    expect(FSSIOFGET).toBe(0x40044604);
  });

  it('carry the argument sizes of struct fss_set and struct fss_get', () => {
    expect((FSSIOCSET >>> 16) & 0x1fff).toBe(FSS_SET_BYTES);
    expect((FSSIOCGET >>> 16) & 0x1fff).toBe(FSS_GET_BYTES);
  });

  it('name their numbers, and nothing else', () => {
    expect(ioctlName(0x80184605)).toBe('FSSIOCSET');
    expect(ioctlName(0x20004602)).toBe('FSSIOCCLR');
    expect(ioctlName(0x80184600)).toBeUndefined(); // FSSIOCSET50 is not supported
  });

  it('has the flag bits of fssvar.h', () => {
    expect(FSS_UNCONFIG_ON_CLOSE).toBe(0x01);
    expect(FSS_UNLINK_ON_CREATE).toBe(0x02);
  });

  it('splits a time into a timeval', () => {
    expect(timeValFromMs(1_700_000_000_123.5)).toEqual({ tv_sec: 1_700_000_000, tv_usec: 123_500 });
    expectTypeOf<FssGet['fsg_time']>().toEqualTypeOf<{ tv_sec: number; tv_usec: number }>();
  });
});
