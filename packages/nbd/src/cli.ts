/**
 * fss-nbd: a development server that exports an image file (and, once the engine is there,
 * snapshots of it) over NBD, for tests and benchmarks until fssd takes over.
 *
 *   fss-nbd [-r] [-n NAME] [-s SOCKET | --tcp HOST:PORT] [--snapshot NAME=SOCKET ...] [-v] IMAGE
 *
 * The image is served read-write (read-only with -r) under NAME (default: the image's
 * basename) and the default empty name, on a unix socket (default IMAGE.sock), or on TCP only
 * when --tcp is given. With --snapshot, the image becomes an origin: every write copies the
 * old clusters first, and each NAME is a snapshot taken at start-up and served read-only on
 * its own SOCKET (stores in memory: this is a development tool). "ready" is printed to stdout
 * once every socket listens; SIGTERM or SIGINT closes gracefully and exits 0.
 *
 * Exit status: 0 after a clean shutdown, 1 on bad usage or a start-up error (message on stderr
 * as `fss-nbd: CODE: description`).
 */
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import type { BlockDevice } from '@fss/core';
import { toFssError } from '@fss/core';
import { FileBlockDevice } from './dev/file-device';
import { attachSnapshots, type SnapshotRequest } from './dev/snapshots';
import { type NbdListenAddress, NbdServer } from './server';

const USAGE =
  'usage: fss-nbd [-r] [-n name] [-s socket | --tcp host:port] [--snapshot name=socket ...] [-v] image';

interface Arguments {
  image: string;
  name: string;
  readOnly: boolean;
  address: NbdListenAddress;
  snapshots: SnapshotRequest[];
  verbose: boolean;
}

function parseArguments(argv: string[]): Arguments | undefined {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'read-only': { type: 'boolean', short: 'r' },
      name: { type: 'string', short: 'n' },
      socket: { type: 'string', short: 's' },
      tcp: { type: 'string' },
      snapshot: { type: 'string', multiple: true },
      verbose: { type: 'boolean', short: 'v' },
    },
  });
  const image = positionals[0];
  if (image === undefined || positionals.length !== 1) return undefined;
  if (values.socket !== undefined && values.tcp !== undefined) return undefined;
  let address: NbdListenAddress = { path: values.socket ?? `${image}.sock` };
  if (values.tcp !== undefined) {
    const match = /^(.+):(\d+)$/.exec(values.tcp);
    if (match === null) return undefined;
    address = { host: match[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(match[2]) };
  }
  const snapshots: SnapshotRequest[] = [];
  for (const each of values.snapshot ?? []) {
    const match = /^([A-Za-z0-9._-]+)=(.+)$/.exec(each);
    if (match === null) return undefined;
    snapshots.push({ name: match[1]!, socketPath: match[2]! });
  }
  return {
    image,
    name: values.name ?? basename(image),
    readOnly: values['read-only'] === true,
    address,
    snapshots,
    verbose: values.verbose === true,
  };
}

/**
 * Reads and writes of the image run on libuv's thread pool, 4 threads by default: too few to
 * keep several connections with dozens of requests in flight busy (nbdkit runs 16 threads).
 * libuv sizes the pool when it is first used. The built binary is CommonJS, whose loading
 * reads files synchronously, so this line runs first; run from source through an ESM loader
 * (tsx), the pool already exists and only UV_THREADPOOL_SIZE in the environment counts.
 */
const THREAD_POOL_SIZE_DEFAULT = '16';
process.env['UV_THREADPOOL_SIZE'] ??= THREAD_POOL_SIZE_DEFAULT;

async function main(): Promise<number> {
  let args: Arguments | undefined;
  try {
    args = parseArguments(process.argv.slice(2));
  } catch {
    args = undefined;
  }
  if (args === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 1;
  }
  const log = (message: string): void => {
    process.stderr.write(`fss-nbd: ${message}\n`);
  };
  const debug = args.verbose ? log : undefined;
  const file = await FileBlockDevice.open(args.image, { readOnly: args.readOnly });
  const servers: NbdServer[] = [];
  let origin: BlockDevice = file;
  if (args.snapshots.length > 0) {
    const attached = await attachSnapshots(file, args.snapshots, log);
    origin = attached.origin;
    for (const snapshot of attached.snapshots) {
      const server = new NbdServer({ exports: [snapshot.export], log, debug });
      await server.listen({ path: snapshot.socketPath });
      servers.push(server);
    }
  }
  const main = new NbdServer({ exports: [{ name: args.name, device: origin }], log, debug });
  await main.listen(args.address);
  servers.push(main);
  process.stdout.write('ready\n');

  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await Promise.all(servers.map((server) => server.close()));
  // Snapshots first: closing the origin under an open snapshot would invalidate it.
  for (const server of servers) {
    for (const each of server.exports) if (each.device !== origin) await each.device.close();
  }
  await origin.close();
  if (origin !== file) await file.close();
  return 0;
}

main().then(
  (status) => process.exit(status),
  (error: unknown) => {
    const fssError = toFssError(error);
    process.stderr.write(`fss-nbd: ${fssError.message}\n`);
    process.exit(1);
  },
);
