/** What the client programs' manuals share: the environment and files of the run directory. */
import type { Item } from '@fss/manual';

export const COMMON_ENVIRONMENT: readonly Item[] = [
  {
    term: 'FSS_RUNDIR',
    text: 'The run directory where fssd listens: default /run/fss as root, else $XDG_RUNTIME_DIR/fss or /tmp/fss-UID.',
  },
  {
    term: 'FSS_FSSD',
    text: 'The fssd program to start on demand when none answers: default the fssd installed beside this program, else fssd on PATH.',
  },
  {
    term: 'FSS_UNITS',
    text: 'The number of units of a daemon started on demand (default 16); the daemon inherits the environment.',
  },
  {
    term: 'FSS_STATEDIR, FSS_DEVDIR, FSS_DURABILITY',
    text: 'Passed to a daemon started on demand; see fssd(8).',
  },
];

export const COMMON_FILES: readonly Item[] = [
  { term: 'RUNDIR/fssd.sock', text: "fssd's control socket (0600)." },
  { term: 'RUNDIR/fssN.sock', text: "Unit fssN's read-only NBD export." },
  { term: 'RUNDIR/origin/NAME.sock', text: "Origin NAME's read-write NBD export." },
  { term: 'RUNDIR/fssd.log', text: "The daemon's log." },
  {
    term: '/dev/fssN, /dev/fss/NAME',
    text: 'Kernel block devices of units and attached origins, when fssd makes them (root).',
  },
];
