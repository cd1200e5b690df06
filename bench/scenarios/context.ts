/**
 * What every scenario gets from run.ts: the configuration, the sandbox, the cleanup stack, a
 * progress log, and `compare`, which runs a comparison with the run's round count, drops the
 * caches before every measurement and logs each figure. Scenarios that use NBD also get the
 * peers and the fssd session serving the origin, all started once for the run.
 */
import type { Cleanup } from '../lib/cleanup';
import type { BenchConfig } from '../lib/config';
import { type ComparisonSpec, type Row, runComparison } from '../lib/measure';
import type { FssdSession, OursOrigin } from '../lib/ours';
import type { Peer } from '../lib/peers';
import type { Image, Sandbox } from '../lib/sandbox';

export interface BenchContext {
  readonly config: BenchConfig;
  readonly cleanup: Cleanup;
  readonly sandbox: Sandbox;
  log(line: string): void;
  compare(spec: Omit<ComparisonSpec, 'beforeEach' | 'onMeasure'>): Promise<Row[]>;
}

/** The images: fss's, and the copies the peers serve (fio on the device uses qemu-nbd's). */
export interface Images {
  readonly ours: Image;
  readonly nbdkit: Image;
  readonly qemu: Image;
  /** nbdcopy's write source: FSS_BENCH_WRITE_SIZE bytes of other data. */
  readonly writeSource: string;
}

export interface NbdContext extends BenchContext {
  readonly images: Images;
  readonly nbdkit: Peer;
  readonly qemu: Peer;
  readonly fss: FssdSession;
  readonly origin: OursOrigin;
}

export function makeContext(options: {
  config: BenchConfig;
  cleanup: Cleanup;
  sandbox: Sandbox;
  log: (line: string) => void;
}): BenchContext {
  const { config, sandbox, log } = options;
  return {
    ...options,
    compare: (spec) =>
      runComparison(
        {
          ...spec,
          beforeEach: () => sandbox.dropCaches(),
          onMeasure: (round, label, value) =>
            log(
              `  ${spec.group}: round ${round + 1}: ${label}: ${Number.isNaN(value) ? 'FAILED' : `${value.toFixed(1)} ${spec.unit}`}`,
            ),
        },
        config.rounds,
      ),
  };
}
