/**
 * fssconfig(8): the one description of fssconfig. Its --help text and man page are rendered
 * from it; its usage stays NetBSD's three lines (`usage`), checked verbatim by the golden
 * transcripts.
 */
import type { Manual } from '@fss/manual';
import { COMMON_ENVIRONMENT, COMMON_FILES } from './common';

export const FSSCONFIG_MANUAL: Manual = {
  name: 'fssconfig',
  section: 8,
  summary: 'configure file system snapshot devices',
  synopsis: [
    '[-cxv] device path backup [cluster [size]]',
    '-c [--on-full invalidate|block [--on-full-timeout SECONDS]] [-xv] device path backup [cluster [size]]',
    '-u [-v] device',
    '-l [-v] [device]',
  ],
  usage: ['[-cxv] device path backup [cluster [size]]', '-u [-v] device', '-l [-v] [device]'],
  description: [
    "fssconfig configures, unconfigures and lists the snapshot units fss0, fss1, ... of fssd(8), with the flags, messages and exit codes of NetBSD's fssconfig(8). A unit is a point-in-time, read-only view of an origin: before the first write to a cluster of the origin after the snapshot, the cluster's old contents are saved to the unit's backup.",
    "device is fssN or /dev/fssN. path is a block device, an image file, or the mount point of a filesystem mounted from an origin attached by fss (fss origin add --attach), which is frozen (FIFREEZE) for the snapshot moment and thawed in every outcome. backup is a file (created mode 0600, or truncated if it exists and is not in use, then extended sparse to size, default the origin's size), a directory (a temporary file is made inside and unlinked once the unit is configured) or a block device (used raw). cluster is the preferred cluster size (0: 64 KiB); cluster and size take the suffixes b (512), k, m, g, t, w (4) and products AxB.",
    'The unit is served read-only over NBD at RUNDIR/fssN.sock, and as root also as /dev/fssN. A unit on a named file or a raw device is persistent: it comes back after fssd restarts (fssd(8), --durability). A failed backup write (ENOSPC, EIO) makes the snapshot invalid: its reads fail with ENXIO, writes to the origin never fail because of it.',
  ],
  options: [
    { flags: '-c', text: 'Configure device (the default action).' },
    { flags: '-u', text: 'Unconfigure device. The backup file stays.' },
    { flags: '-l', text: 'List every unit, or device: fss0: PATH, or fss0: not in use.' },
    {
      flags: '-v',
      text: "Verbose: with -c and -u list the unit afterwards or before; with -l add when it was taken, unconfig on close, the cluster count and size and the backup's use, and persistent.",
    },
    {
      flags: '-x',
      text: 'Unlink backup once the unit is configured (FSS_UNLINK_ON_CREATE); the unit is then not persistent.',
    },
    {
      flags: '--on-full invalidate|block',
      text: "A Linux addition, with -c: what a full backup does. invalidate (the default, NetBSD's): the unit turns invalid and origin writes go on. block: origin writes that need a copy wait until the backup has space again, for at most --on-full-timeout, then the unit turns invalid and they go on.",
    },
    { flags: '--on-full-timeout SECONDS', text: 'How long block waits, 1 to 86400 (default 30).' },
    { flags: '--help', text: 'Print this help on stdout and exit 0.' },
  ],
  sections: [
    {
      title: 'EXIT STATUS',
      body: [
        "0 on success, 1 on any error (fssconfig: DEVICE: FSSIOCSET: strerror, as err(3) prints it, and fssd's detail on a second line when it has one) and on bad usage (the three usage lines on stderr).",
      ],
    },
    { title: 'ENVIRONMENT', body: [{ items: COMMON_ENVIRONMENT }] },
    { title: 'FILES', body: [{ items: COMMON_FILES }] },
    {
      title: 'EXAMPLES',
      body: [
        'Snapshot a live filesystem mounted from an attached origin and back it up:',
        {
          code: [
            'fss origin add /dev/vdb --name home --attach',
            'mount /dev/fss/home /home',
            'fssconfig -c fss0 /home /var/tmp/fss0.bak',
            'mount -o ro /dev/fss0 /mnt && tar -C /mnt -cf /backup/home.tar . && umount /mnt',
            'fssconfig -u fss0',
          ],
        },
      ],
    },
  ],
  seeAlso: ['fss(8)', 'fssd(8)', 'fssck(8)', 'mount(8)'],
};
