/** fssck(8): the one description of fssck; its usage, --help text and man page come from it. */
import type { Manual } from '@fss/manual';

export const FSSCK_MANUAL: Manual = {
  name: 'fssck',
  section: 8,
  summary: 'check an fss backing store offline',
  synopsis: ['[--json] STORE'],
  description: [
    "fssck checks a backing store (a backup file or a raw device) read only, the way fsck checks a filesystem: the header (magic, format version 1 or 2, CRC), the geometry fields against each other and the store's size, and the indirect table (entries within bounds, no store cluster mapped twice, none in use and unmapped; entries a torn last commit left past the next cluster are a warning and ignored).",
    'It prints a summary line, every warning and error, then clean or damaged (N errors). Run it on a store no daemon is using.',
  ],
  options: [
    {
      flags: '--json',
      text: 'Print one object instead: {store, clean, header, copiedClusters, tornEntries, findings: [{severity, code, message}]}.',
    },
    { flags: '--help', text: 'Print this help on stdout and exit 0.' },
  ],
  sections: [
    {
      title: 'EXIT STATUS',
      body: [
        '0 when the store is clean, 1 when it is damaged, 2 for bad usage and for a store that cannot be opened or read at all (nothing was checked).',
      ],
    },
    {
      title: 'EXAMPLES',
      body: [
        {
          code: [
            '$ fssck /var/tmp/back',
            'fssck: /var/tmp/back: format 2, commit 0, origin /srv/disk.img (8.0M), 128 cluster of 64K, 3 copied, valid, taken 2026-12-02 02:46:13',
            'fssck: /var/tmp/back: clean',
          ],
        },
      ],
    },
  ],
  seeAlso: ['fssconfig(8)', 'fssd(8)', 'fsck(8)'],
};
