/**
 * The I/O each measurement drives, one function per tool, each returning one number:
 *
 *   fio       `--ioengine=libaio --direct=1` on a device or file, or `--ioengine=nbd
 *             --uri=nbd+unix:///?socket=...` on an export (one job = one connection); JSON
 *             output, bandwidth and IOPS of the job. Time-based jobs ramp 0.5 s first.
 *             Writes end with `end_fsync=1` (an NBD FLUSH), so a server that only wrote into
 *             the page cache pays for its write-back inside the measurement.
 *   nbdcopy   a whole export to `null:` (reads, 1 or 4 connections), or a source file onto
 *             an export with `--flush` (writes); wall time of the command.
 *   in-process `queueDepth` loops of `requestBytes` reads or writes through a BlockDevice
 *             (an Origin or a Snapshot), buffers from its allocateBuffer (aligned memory).
 */
import type { BlockDevice } from '@fss/core';
import { MiB } from './config';
import { nbdUri } from './peers';
import { runCommand } from './processes';

export type FioDirection = 'read' | 'write' | 'randread' | 'randwrite';

export type FioTarget = { kind: 'device'; path: string } | { kind: 'nbd'; socketPath: string };

export interface FioJob {
  target: FioTarget;
  rw: FioDirection;
  blockBytes: number;
  queueDepth: number;
  /** The region the job covers, from offset 0. */
  sizeBytes: number;
  /** Run for this long (after a 0.5 s ramp) instead of once over the region. */
  seconds?: number;
  /** Stop after this many bytes (random jobs over a large region). */
  ioBytes?: number;
}

export interface Throughput {
  mibPerSecond: number;
  iops: number;
}

/** fio's command line for `job` (exported for the README and tests). */
export function fioArgs(job: FioJob): string[] {
  const args = [
    '--name=bench',
    '--output-format=json',
    `--rw=${job.rw}`,
    `--bs=${job.blockBytes}`,
    `--iodepth=${job.queueDepth}`,
    `--size=${job.sizeBytes}`,
  ];
  if (job.target.kind === 'device')
    args.push(`--filename=${job.target.path}`, '--ioengine=libaio', '--direct=1');
  else args.push('--ioengine=nbd', `--uri=${nbdUri(job.target.socketPath)}`);
  if (job.seconds !== undefined) args.push('--time_based', `--runtime=${job.seconds}s`, '--ramp_time=0.5s');
  if (job.ioBytes !== undefined) args.push(`--io_size=${job.ioBytes}`);
  if (job.rw === 'randwrite' || job.rw === 'randread') args.push('--randrepeat=0');
  if (job.rw === 'write' || job.rw === 'randwrite') args.push('--end_fsync=1');
  return args;
}

/** Bandwidth and IOPS of the first job in fio's JSON output (which may follow log lines). */
export function parseFioOutput(stdout: string, rw: FioDirection): Throughput {
  const start = stdout.indexOf('{');
  if (start < 0) throw new Error(`fio printed no JSON: ${stdout.slice(0, 200)}`);
  const parsed = JSON.parse(stdout.slice(start)) as {
    jobs: {
      error: number;
      read: { bw_bytes: number; iops: number };
      write: { bw_bytes: number; iops: number };
    }[];
  };
  const job = parsed.jobs[0];
  if (job === undefined) throw new Error('fio printed no job');
  if (job.error !== 0) throw new Error(`fio job failed with error ${job.error}`);
  const side = rw === 'read' || rw === 'randread' ? job.read : job.write;
  return { mibPerSecond: side.bw_bytes / MiB, iops: side.iops };
}

export async function runFio(job: FioJob): Promise<Throughput> {
  const { stdout } = await runCommand('fio', fioArgs(job));
  return parseFioOutput(stdout, job.rw);
}

/** Reads the whole export with nbdcopy; MiB/s over the command's wall time. */
export async function nbdcopyRead(
  socketPath: string,
  sizeBytes: number,
  connections: number,
): Promise<number> {
  const startMs = performance.now();
  await runCommand('nbdcopy', [`--connections=${connections}`, nbdUri(socketPath), 'null:']);
  return sizeBytes / MiB / ((performance.now() - startMs) / 1000);
}

/** Copies `sourceFile` onto the start of the export and flushes; MiB/s over wall time. */
export async function nbdcopyWrite(
  sourceFile: string,
  sizeBytes: number,
  socketPath: string,
): Promise<number> {
  const startMs = performance.now();
  await runCommand('nbdcopy', ['--flush', sourceFile, nbdUri(socketPath)]);
  return sizeBytes / MiB / ((performance.now() - startMs) / 1000);
}

export interface TransferJob {
  direction: 'read' | 'write';
  /** From offset 0. */
  lengthBytes: number;
  requestBytes: number;
  queueDepth: number;
}

/**
 * `queueDepth` loops, each with one request in flight, walking the region in order; MiB/s.
 * A write loop fills its buffer once with a byte unique to the loop (the data is not
 * checked; it only has to differ from what the device held).
 */
export async function transfer(device: BlockDevice, job: TransferJob): Promise<number> {
  const requestCount = Math.ceil(job.lengthBytes / job.requestBytes);
  const buffers = Array.from({ length: job.queueDepth }, (_, index) => {
    const buffer = device.allocateBuffer?.(job.requestBytes) ?? new Uint8Array(job.requestBytes);
    return buffer.fill(0x40 + index);
  });
  let next = 0;
  const startMs = performance.now();
  await Promise.all(
    buffers.map(async (buffer) => {
      for (let request = next++; request < requestCount; request = next++) {
        const offset = request * job.requestBytes;
        const length = Math.min(job.requestBytes, job.lengthBytes - offset);
        const view = length === buffer.length ? buffer : buffer.subarray(0, length);
        if (job.direction === 'read') await device.read(view, offset);
        else await device.write(view, offset);
      }
    }),
  );
  if (job.direction === 'write') await device.flush();
  return job.lengthBytes / MiB / ((performance.now() - startMs) / 1000);
}
