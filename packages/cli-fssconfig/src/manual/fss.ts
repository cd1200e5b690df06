/**
 * fss(8): the one description of `fss` and its commands. Its usage text, its `--help` texts
 * and its man page are rendered from this (@fss/manual); a new command is one entry in
 * `commands`, next to its dispatch in commands/fss.ts.
 */
import type { CommandHelp, Manual } from '@fss/manual';
import { COMMON_ENVIRONMENT, COMMON_FILES } from './common';

export const FSS_MANUAL: Manual = {
  name: 'fss',
  section: 8,
  summary: 'manage fss origins, show what fssd holds, copy and back up snapshots, roll back',
  description: [
    "fss is the companion of fssconfig(8) for what NetBSD has no word for: the origins fssd holds (block devices and disk images whose every write passes through fss, so that their snapshots miss none), the daemon's status, and which blocks changed since a snapshot. Like fssconfig it talks to fssd(8) over its control socket and starts it on demand.",
    'An origin is claimed exclusively: a block device is opened O_EXCL, an image is locked and refused while a loop device uses it. Write to it only through its NBD export (or its attached kernel device): writes that bypass fss would be missing from every snapshot, and fssd invalidates the snapshots of an origin it sees written elsewhere.',
  ],
  commands: [
    {
      words: ['origin', 'add'],
      synopsis: ['PATH [--name NAME] [--attach]'],
      summary: 'Claim PATH (a block device or an image file) as an origin and export it read-write over NBD',
      description: [
        'The origin stays until fss origin rm. Its NBD socket is RUNDIR/origin/NAME.sock; write to the origin through it (nbdcopy, qemu-img, qemu-io, nbdfuse). Origins that fssconfig -c claims implicitly are released with their last unit.',
      ],
      options: [
        {
          flags: '--name NAME',
          text: "The origin's name: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -. Default: the basename of PATH, made unique.",
        },
        {
          flags: '--attach',
          text: 'Also make the origin a kernel block device, /dev/fss/NAME (root, /dev/fuse, the loop driver), whose every write takes the copy-on-write path: mount a filesystem from it, and fssconfig -c fssN MOUNTPOINT BACKUP snapshots it live.',
        },
      ],
    },
    {
      words: ['origin', 'rm'],
      synopsis: ['[--force] NAME'],
      summary: 'Release the origin NAME: its export closes and its claim is dropped',
      description: [
        'EBUSY while units are configured on it, while its device is mounted, or while NBD clients are connected to its export.',
      ],
      options: [{ flags: '--force', text: "Disconnect the export's NBD clients instead of refusing." }],
    },
    {
      words: ['origin', 'ls'],
      synopsis: [''],
      summary: 'List the origins, one a line',
      description: ['NAME: PATH, SIZE, added|implicit, units fss0,fss1, export SOCKET[, device DEV (LOOP)].'],
    },
    {
      words: ['status'],
      synopsis: ['[--json] [--watch [--interval SECONDS] [--count N]]'],
      summary: 'Show the daemon, every configured unit and every origin',
      description: [
        "Per unit: its origin, backup, export and clients, validity, when it was taken, the backing store's use and limit, the rate the store grows and when it will be full (moving averages kept by fssd, 10 s time constant). Per origin: its export, units and write rate.",
      ],
      options: [
        {
          flags: '--json',
          text: 'Print the status document instead: one JSON object, schemaVersion 1, every key always present (docs/status-schema.md; its JSON Schema ships as @fss/cli-fssconfig/status.schema.json).',
        },
        {
          flags: '--watch',
          text: 'Ask again every interval until SIGINT or SIGTERM (exit 0): redrawn on a terminal, frames separated by an empty line elsewhere, one JSON document per line with --json.',
        },
        { flags: '--interval SECONDS', text: 'The interval of --watch, 0.1 to 86400 (default 2).' },
        { flags: '--count N', text: 'Stop --watch after N frames.' },
      ],
    },
    {
      words: ['changed'],
      synopsis: ['fssN [--json] [--since fssM]'],
      summary: 'List the extents of the origin written since fssN was taken, or between fssM and fssN',
      description: [
        "Cluster granularity (fssN's clusters, fssM's with --since), adjacent clusters merged, the last clipped to the device. Text: one OFFSET LENGTH (bytes) a line. No data is read: fssN's copied bitmap, and for --since what fssM had copied when fssN was taken.",
        'ENXIO when fssN is not configured or invalid (what changed is unknown), or when fssM was already invalid when fssN was taken; EINVAL when fssM is not older than fssN or snapshots another origin.',
      ],
      options: [
        {
          flags: '--json',
          text: 'Print {"unit", "since", "clusterSize", "extents": [{"offset", "length"}]} instead.',
        },
        {
          flags: '--since fssM',
          text: 'An older unit of the same origin: only what was written after it was taken.',
        },
      ],
    },
    {
      words: ['rollback'],
      synopsis: ['fssN'],
      summary: 'Make the origin equal to fssN again, then unconfigure fssN',
      description: [
        'Every cluster fssN saved is written back through the origin\'s copy-on-write path, so its other units stay exact. The rollback runs in fssd; the command starts it and shows its progress until it ends: on a terminal one line redrawn (fss0: rolling back: 42% (3M of 8M)), otherwise one JSON line {"unit", "state", "doneBytes", "totalBytes"} whenever it moved, the last one "state":"done". Interrupting the command does not stop the rollback; a persistent unit\'s rollback resumes from its recorded progress when fssd starts again.',
        "EBUSY while the origin is mounted or has NBD clients on its export, while fssN is mounted or has clients, or while a rollback of the origin runs; ENXIO for a unit not configured or invalid. fssd's FSS_ROLLBACK_RATE (bytes a second) limits its speed.",
      ],
    },
    {
      words: ['dump'],
      synopsis: ['[--format raw|qcow2] [--progress auto|bar|json|none] fssN FILE|-'],
      summary: 'Write the snapshot fssN as an image to FILE, or to stdout',
      description: [
        'raw (the default) into FILE is sparse (all-zero 4 KiB blocks are not written, so holes stay holes), written 0600 under a temporary name beside FILE and renamed over it only once the copy is complete and the unit is still the same valid snapshot; into - every byte goes to stdout. An error, a snapshot that turns invalid mid-way (exit 1) or SIGINT, SIGTERM or SIGHUP (exit 128 + the signal) leaves no FILE.',
      ],
      options: [
        {
          flags: '--format raw|qcow2',
          text: "qcow2 runs qemu-img convert on the unit's export (FSS_QEMU_IMG, else qemu-img on PATH).",
        },
        {
          flags: '--progress auto|bar|json|none',
          text: 'Progress on stderr: bar (bytes, rate, ETA), json (one line per phase start, at most one per second, and a final line with done true), none; auto: bar on a terminal, else none.',
        },
      ],
    },
    {
      words: ['backup'],
      synopsis: ['[--since fssM] [--verify] [--progress auto|bar|json|none] fssN FILE'],
      summary: 'Back fssN up into FILE: in full, or incrementally since fssM',
      description: [
        "Without --since, as fss dump fssN FILE. With --since fssM (an older unit of the same origin) only the extents written between fssM and fssN are read and written into FILE in place, which must be the previous backup (a regular file of the snapshot's size, else EINVAL); holes stay holes. An interrupted incremental backup leaves FILE partly updated and says so; the same command completes it.",
      ],
      options: [
        { flags: '--since fssM', text: "Incremental: FILE holds fssM's backup." },
        {
          flags: '--verify',
          text: 'Read back everything written and compare it with the snapshot (a difference is EIO naming the first differing byte).',
        },
        {
          flags: '--progress auto|bar|json|none',
          text: 'Progress on stderr: bar (bytes, rate, ETA), json (one line per phase start, at most one per second, and a final line with done true), none; auto: bar on a terminal, else none.',
        },
      ],
    },
    {
      words: ['export'],
      synopsis: [
        'fssN --tcp ADDR:PORT (--tls-certs DIR [--tls-verify-peer] | --tls-psk FILE | --insecure)',
        '--stop fssN',
      ],
      summary: "Also serve fssN's export over TCP, for backups from another machine",
      description: [
        "fssN's export (read-only) is served on exactly ADDR:PORT (an IPv4 address, a host name or [IPv6]; port 0 picks a free one), TLS required of every client (NBD STARTTLS), so a backup host reads it with nbdcopy, nbdinfo or qemu-img over nbds://. Prints fssN: URL (tls x509|psk, N clients). --stop stops it; unconfiguring fssN stops it too, and fssd does not restart it.",
        'EINVAL for no TLS choice or two, a bad ADDR:PORT, or credentials that cannot be used; ENOENT naming a credential file it cannot read; ENXIO for a unit not configured; EBUSY when fssN already has a TCP listener; EADDRINUSE from listen(2).',
      ],
      options: [
        { flags: '--tcp ADDR:PORT', text: 'Where to listen; there is no default address.' },
        {
          flags: '--tls-certs DIR',
          text: "x509: qemu-nbd's and nbdkit's directory (ca-cert.pem, server-cert.pem, server-key.pem).",
        },
        {
          flags: '--tls-verify-peer',
          text: 'With --tls-certs: clients must present a certificate signed by ca-cert.pem.',
        },
        { flags: '--tls-psk FILE', text: 'A psktool key file, one username:hexkey a line.' },
        {
          flags: '--insecure',
          text: 'Plaintext: anyone who reaches the port reads the snapshot. Never a default.',
        },
      ],
    },
  ],
  sections: [
    {
      title: 'EXIT STATUS',
      body: [
        "0 on success; 1 on an error (fss: WHAT: strerror, then fssd's detail on a second line when it has one) and on bad usage (the synopsis on stderr).",
      ],
    },
    { title: 'ENVIRONMENT', body: [{ items: COMMON_ENVIRONMENT }] },
    { title: 'FILES', body: [{ items: COMMON_FILES }] },
    {
      title: 'EXAMPLES',
      body: [
        'Snapshot a disk image, keep writing to it through fss, read the snapshot:',
        {
          code: [
            'fss origin add /srv/disk.img --name disk',
            'fssconfig -c fss0 /srv/disk.img /var/tmp/fss0.bak',
            'qemu-io -f raw nbd+unix:///?socket=/run/fss/origin/disk.sock -c "write 0 1M"',
            'nbdcopy nbd+unix:///?socket=/run/fss/fss0.sock /backup/disk-at-fss0.img',
            'fss status --json | jq ".units[0].storeBytesUsed"',
            'fssconfig -u fss0; fss origin rm disk',
          ],
        },
      ],
    },
  ],
  seeAlso: ['fssconfig(8)', 'fssd(8)', 'fssck(8)', 'nbdcopy(1)', 'qemu-img(1)'],
};

/** The command of FSS_MANUAL named by `words` (the programs print its usage on their own errors). */
export function fssCommand(...words: string[]): CommandHelp {
  const found = FSS_MANUAL.commands?.find((command) => command.words.join(' ') === words.join(' '));
  if (found === undefined) throw new Error(`fss(8) has no command ${words.join(' ')}`);
  return found;
}
