/**
 * fssd(8): the one description of the daemon. Its usage line (bad usage, compared verbatim by
 * test/dist.test.ts), its --help text and its man page are rendered from it (@fss/manual).
 */
import type { Manual } from '@fss/manual';

export const FSSD_MANUAL: Manual = {
  name: 'fssd',
  section: 8,
  summary: 'the fss snapshot daemon: owns origins, snapshot units, their stores and exports',
  synopsis: [
    '[--rundir DIR] [--units N] [--devices auto|off] [--devdir DIR] [--statedir DIR] [--durability process|power|none] [--bypass-check-ms MS]',
  ],
  description: [
    "fssd owns the origins and the snapshot units fss0 ... fss(N-1) the way NetBSD's kernel owns fss(4) units. fssconfig(8) and fss(8) talk to it over RUNDIR/fssd.sock and start it on demand when it does not answer; under systemd it runs as fssd.service (shipped in the package's dist/ with fss-tmpfiles.conf for /run/fss).",
    "It claims every origin exclusively and serves it read-write over NBD at RUNDIR/origin/NAME.sock, each unit read-only at RUNDIR/fssN.sock; as root, with /dev/fuse and the loop driver, units are also kernel block devices /dev/fssN and attached origins /dev/fss/NAME. Every origin write takes the copy-on-write path: the clusters it displaces are saved to each unit's backing store first. A store that fails makes its snapshot invalid; an origin write never fails or is lost because of a store.",
    'fssd always runs in the foreground. It logs one line per event to RUNDIR/fssd.log and to stderr; with --foreground the stderr lines carry no timestamp and, when stderr is the journal, a syslog priority prefix (<3> errors, <4> warnings, <6> the rest). Once it serves its control socket it tells systemd it is ready when NOTIFY_SOCKET is set (READY=1, and STOPPING=1 when it stops).',
  ],
  options: [
    {
      flags: '--rundir DIR',
      text: 'The run directory (0700): default $FSS_RUNDIR, else /run/fss as root, else $XDG_RUNTIME_DIR/fss, else /tmp/fss-UID.',
    },
    { flags: '--units N', text: 'Units fss0 ... fss(N-1): default $FSS_UNITS, else 16.' },
    {
      flags: '--devices auto|off',
      text: 'Kernel block devices for units and attached origins where possible (root, /dev/fuse, loop), or never: default $FSS_DEVICES, else auto.',
    },
    { flags: '--devdir DIR', text: 'Where the device links go: default $FSS_DEVDIR, else /dev.' },
    {
      flags: '--statedir DIR',
      text: 'Where persistent units are recorded: default $FSS_STATEDIR, else /var/lib/fss as root, else $XDG_STATE_HOME/fss.',
    },
    {
      flags: '--durability process|power|none',
      text: "What a persistent unit survives: fssd's death (process, the default, or $FSS_DURABILITY), power loss too (power: the store is fdatasynced in every commit), or nothing (none: no unit is persistent, as NetBSD).",
    },
    {
      flags: '--bypass-check-ms MS',
      text: "How often origins with valid snapshots are checked for writes outside fss (loop devices over them, other processes' writable descriptors), which invalidate their snapshots: default $FSS_BYPASS_CHECK_MS, else 1000; 0: never.",
    },
    {
      flags: '-f, --foreground',
      text: 'Log for a service manager: stderr lines without timestamps, with syslog priorities when stderr is the journal. fssd never forks either way.',
    },
    { flags: '--help', text: 'Print this help on stdout and exit 0.' },
  ],
  sections: [
    {
      title: 'SIGNALS',
      body: [
        'SIGTERM and SIGINT unconfigure every unit (persistent ones stay recorded and come back at the next start), release every origin, remove the sockets and exit 0. SIGHUP is ignored.',
      ],
    },
    {
      title: 'EXIT STATUS',
      body: [
        '0 after SIGTERM or SIGINT released everything; 1 when it cannot start (the reason on stderr); 2 on bad usage; 3 when another fssd already serves the run directory.',
      ],
    },
    {
      title: 'ENVIRONMENT',
      body: [
        {
          items: [
            {
              term: 'FSS_RUNDIR, FSS_UNITS, FSS_DEVICES, FSS_DEVDIR, FSS_STATEDIR, FSS_DURABILITY, FSS_BYPASS_CHECK_MS',
              text: 'Defaults of the options above.',
            },
            {
              term: 'FSS_ROLLBACK_RATE',
              text: 'A rollback (fss rollback) writes at most this many bytes a second; default 0: no limit.',
            },
            { term: 'UV_THREADPOOL_SIZE', text: "libuv's thread pool (default 16 in the fssd program)." },
            {
              term: 'NOTIFY_SOCKET',
              text: "systemd's notification socket: fssd sends READY=1 once it serves, STOPPING=1 when it stops.",
            },
            {
              term: 'JOURNAL_STREAM',
              text: 'Set by systemd when stderr is the journal: with --foreground, lines get syslog priority prefixes.',
            },
          ],
        },
      ],
    },
    {
      title: 'FILES',
      body: [
        {
          items: [
            { term: 'RUNDIR/fssd.sock', text: 'The control socket (0600).' },
            { term: 'RUNDIR/fssd.pid, RUNDIR/fssd.log', text: 'The pid and the log.' },
            {
              term: 'RUNDIR/fssN.sock, RUNDIR/origin/NAME.sock',
              text: 'The NBD exports of units and origins.',
            },
            { term: 'STATEDIR', text: 'Records of persistent units (0700).' },
            {
              term: 'fssd.service, fss-tmpfiles.conf',
              text: "The systemd unit and the tmpfiles.d entry for /run/fss, in the package's dist/.",
            },
          ],
        },
      ],
    },
    {
      title: 'EXAMPLES',
      body: [
        {
          code: [
            'fssd --rundir /run/fss --units 32 &          # or: systemctl start fssd',
            'fssconfig -c fss0 /srv/disk.img /var/tmp/fss0.bak',
            'kill -TERM "$(cat /run/fss/fssd.pid)"        # unconfigures fss0, exits 0',
          ],
        },
      ],
    },
  ],
  seeAlso: ['fssconfig(8)', 'fss(8)', 'fssck(8)', 'systemd.service(5)', 'tmpfiles.d(5)'],
};
