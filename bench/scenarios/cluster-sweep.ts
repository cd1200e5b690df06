/**
 * Scenario group `cluster sweep` (issue 12, item 5): first-touch writes (a fresh unit per
 * measurement) with cluster sizes from 4 KiB to 1 MiB, fio's nbd engine writing
 * FSS_BENCH_WRITE_SIZE sequentially in 1 MiB requests at QD16, each size paired with its own
 * qemu-nbd write in the same round. The 64 KiB row repeats `origin writes`' first-touch row
 * at the default size; the others show how per-cluster costs (one cache slot, one origin read
 * and one bitmap update per cluster) and per-byte costs trade as the cluster grows.
 */
import { KiB, MiB } from '../lib/config';
import type { Row } from '../lib/measure';
import { runFio } from '../lib/workloads';
import type { NbdContext } from './context';

export const SWEEP_CLUSTER_BYTES: readonly number[] = [4, 8, 16, 32, 64, 128, 256, 512, 1024].map(
  (k) => k * KiB,
);

export async function runClusterSweep(ctx: NbdContext): Promise<Row[]> {
  const write = async (socketPath: string): Promise<number> =>
    (
      await runFio({
        target: { kind: 'nbd', socketPath },
        rw: 'write',
        blockBytes: MiB,
        queueDepth: 16,
        sizeBytes: ctx.config.writeBytes,
      })
    ).mibPerSecond;
  const rows: Row[] = [];
  for (const clusterBytes of SWEEP_CLUSTER_BYTES) {
    const label = clusterBytes >= MiB ? `${clusterBytes / MiB} MiB` : `${clusterBytes / KiB} KiB`;
    rows.push(
      ...(await ctx.compare({
        group: 'cluster sweep',
        unit: 'MiB/s',
        better: 'higher',
        contenders: [
          { label: 'qemu-nbd', run: () => write(ctx.qemu.socketPath) },
          {
            label: `fss ${label}`,
            run: async () => {
              const unit = await ctx.fss.configure(0, ctx.origin, clusterBytes);
              try {
                const info = await ctx.fss.info(0);
                if (info.fsg_csize !== clusterBytes)
                  throw new Error(`asked ${clusterBytes}, got ${info.fsg_csize}`);
                return await write(ctx.origin.socketPath);
              } finally {
                await ctx.fss.unconfigure(unit);
              }
            },
          },
        ],
        rows: [
          {
            name: `first touch, ${label} clusters (fio nbd 1 MiB QD16)`,
            subject: `fss ${label}`,
            against: ['qemu-nbd'],
            target: 0.3,
          },
        ],
      })),
    );
  }
  return rows;
}
