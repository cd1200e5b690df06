import { FSS_UNCONFIG_ON_CLOSE } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { formatListLine, formatLocalTime, formatNotInUse } from './list-format';

const get = {
  fsg_mount: '/srv/image',
  fsg_time: { tv_sec: Date.UTC(2026, 10, 24, 9, 30, 5) / 1000, tv_usec: 0 },
  fsg_csize: 65536,
  fsg_mount_size: 32,
  fsg_bs_size: 1,
};

describe('list lines', () => {
  it('formats the short forms', () => {
    expect(formatNotInUse('fss0')).toBe('fss0: not in use');
    expect(formatListLine('fss0', get, 0, false)).toBe('fss0: /srv/image');
  });
  it('formats -lv like NetBSD', () => {
    const taken = formatLocalTime(get.fsg_time.tv_sec);
    expect(taken).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(formatListLine('fss0', get, 0, true)).toBe(
      `fss0: /srv/image, taken ${taken}, 32 cluster of 64K, 64K backup`,
    );
    expect(formatListLine('fss0', { ...get, fsg_bs_size: 33 }, FSS_UNCONFIG_ON_CLOSE, true)).toBe(
      `fss0: /srv/image, taken ${taken}, unconfig on close, 32 cluster of 64K, 2M backup`,
    );
    expect(formatListLine('fss0', { ...get, fsg_csize: 0 }, 0, true)).toBe(
      `fss0: /srv/image, taken ${taken}, file system internal`,
    );
    expect(formatListLine('fss0', get, 0, true, { persistent: true, durability: 'process' })).toBe(
      `fss0: /srv/image, taken ${taken}, 32 cluster of 64K, 64K backup, persistent`,
    );
    expect(formatListLine('fss0', get, 0, true, { persistent: true, durability: 'power' })).toBe(
      `fss0: /srv/image, taken ${taken}, 32 cluster of 64K, 64K backup, persistent (power)`,
    );
    expect(formatListLine('fss0', get, 0, false, { persistent: true })).toBe('fss0: /srv/image');
  });
});
