/**
 * The attached group's pure decisions: when it is skipped, when a time-based first-touch job
 * wrapped round the image, and which loop devices and mounts its clean-up removes after a
 * killed fssd (parsed from `losetup -l` and /proc/self/mountinfo text; nothing is attached).
 */
import { describe, expect, it } from 'vitest';
import { MiB } from '../lib/config';
import { fioArgs } from '../lib/workloads';
import { attachSkipReason, firstTouchJob, loopsBackedUnder, mountsUnder } from '../scenarios/attached';

describe('attachSkipReason', () => {
  it('runs as root with /dev/fuse and the loop driver', () => {
    expect(attachSkipReason({ uid: 0, hasFuse: true, hasLoopControl: true })).toBeUndefined();
  });

  it('names what is missing', () => {
    expect(attachSkipReason({ uid: 1000, hasFuse: true, hasLoopControl: true })).toMatch(/not root/);
    expect(attachSkipReason({ uid: undefined, hasFuse: true, hasLoopControl: true })).toMatch(/not root/);
    expect(attachSkipReason({ uid: 0, hasFuse: false, hasLoopControl: true })).toMatch(/\/dev\/fuse/);
    expect(attachSkipReason({ uid: 0, hasFuse: true, hasLoopControl: false })).toMatch(/loop/);
  });
});

describe('firstTouchJob', () => {
  it('is one pass over the whole image (never time-based: it cannot wrap round to copied clusters)', () => {
    const job = firstTouchJob('/dev/fss/bench', 1024 * MiB);
    expect(job.seconds).toBeUndefined();
    expect(job.sizeBytes).toBe(1024 * MiB);
    expect(fioArgs(job)).toEqual(expect.arrayContaining(['--rw=write', '--bs=1048576', '--iodepth=16']));
    expect(fioArgs(job)).not.toContain('--time_based');
  });
});

describe('loopsBackedUnder', () => {
  const listing = [
    '/dev/loop0 /tmp/other/image',
    '/dev/loop1 /dev/shm/b/attached-fss.img',
    '/dev/loop3 /dev/shm/b/run/fuse/origin-bench/device',
    '/dev/loop4 /dev/shm/b/run/fuse/fss0/device',
    '/dev/loop5 /dev/shm/b/run/fuse-other/device',
    '',
  ].join('\n');

  it('finds the loop devices over files under the directory, and no others', () => {
    expect(loopsBackedUnder(listing, '/dev/shm/b/run/fuse')).toEqual(['/dev/loop3', '/dev/loop4']);
    expect(loopsBackedUnder(listing, '/dev/shm/b/run/fuse/')).toEqual(['/dev/loop3', '/dev/loop4']);
    expect(loopsBackedUnder('', '/dev/shm/b/run/fuse')).toEqual([]);
  });
});

describe('mountsUnder', () => {
  const mountInfo = [
    '22 1 0:21 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw',
    '91 22 0:39 / /dev/shm/b/run/fuse/origin-bench rw,nosuid,nodev - fuse.fss fss rw,user_id=0',
    '92 22 0:40 / /dev/shm/b/run/fuse/with\\040space ro,nosuid,nodev - fuse.fss fss ro,user_id=0',
    '',
  ].join('\n');

  it('lists the mount points under the directory, escapes undone', () => {
    expect(mountsUnder(mountInfo, '/dev/shm/b/run/fuse')).toEqual([
      '/dev/shm/b/run/fuse/origin-bench',
      '/dev/shm/b/run/fuse/with space',
    ]);
    expect(mountsUnder(mountInfo, '/dev/shm/b/run/fuse/origin-bench')).toEqual([]);
  });
});
