/**
 * fssconfig, as NetBSD's (reference facts §1), on top of the control client.
 *
 *   fssconfig [-cxv] device path backup [cluster [size]]
 *   fssconfig -u [-v] device
 *   fssconfig -l [-v] [device]
 *
 * The order of checks follows NetBSD's so the same mistakes get the same first message:
 * configure counts operands (≥3), stats `path` (`stat PATH: …`), looks at `backup` (a
 * directory means a temporary file), counts operands again (≤5), parses `cluster` and
 * `size` with strsuftoll's messages, then asks fssd. The daemon, not this tool, creates the
 * backup, after checking the unit is idle and the backup is not a configured unit's store:
 * a refused configure changes nothing, where NetBSD's would already have truncated it.
 *
 * Messages, err(3)-style, on stderr, exit 1:
 *   fssconfig: stat PATH: strerror          fssconfig: open: DEVICE: strerror
 *   fssconfig: create: BACKUP: strerror     fssconfig: DEVICE: FSSIOCSET: strerror
 *   fssconfig: DEVICE: FSSIOCCLR: strerror  fssconfig: DEVICE: FSSIOCGET: strerror
 * and, when fssd says more than strerror (e.g. how to route a busy origin through fss), a
 * second line `fssconfig: DEVICE: DETAIL` (a Linux addition; the first line is NetBSD's).
 * DEVICE is the operand as typed. Usage errors print the three usage lines, exit 1.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  type ConnectOptions,
  FssClient,
  ON_FULL_POLICIES,
  ON_FULL_TIMEOUT_MS_MAX,
  type OnFullPolicy,
  parseUnitName,
  type SetOptions,
  unitName,
} from '@fss/control';
import { FSS_UNLINK_ON_CREATE, type FssError, strerror, toFssError } from '@fss/core';
import { helpText } from '@fss/manual';
import { formatListLine, formatNotInUse } from '../cli/list-format';
import { type FssconfigOptions, parseFssconfigArgs } from '../cli/options';
import { INT_MAX, LLONG_MAX, NumberSyntaxError, strsuftoll } from '../cli/strsuftoll';
import { FSSCONFIG_USAGE } from '../cli/usage';
import { FSSCONFIG_MANUAL } from '../manual/fssconfig';
import { type CommandIo, Exit, errorDetail } from './io';

const PROG = 'fssconfig';

export async function fssconfig(
  argv: readonly string[],
  io: CommandIo,
  connect: ConnectOptions = {},
): Promise<number> {
  const session = new Session(io, connect);
  try {
    // A Linux addition: NetBSD's getopt would call --help bad usage.
    if (argv.includes('--help')) {
      io.out(helpText(FSSCONFIG_MANUAL));
      return 0;
    }
    const parsed = parseFssconfigArgs(argv);
    if (!parsed.ok) {
      if (parsed.message !== undefined) io.err(`${PROG}: ${parsed.message}`);
      session.usage();
    } else {
      const { options } = parsed;
      if (options.action === 'configure') await session.configure(options);
      else if (options.action === 'unconfigure') await session.unconfigure(options);
      else await session.list(options.operands[0], options.verbose > 0);
    }
    return 0;
  } catch (error) {
    if (error instanceof Exit) return error.status;
    throw error;
  } finally {
    session.close();
  }
}

class Session {
  private client: FssClient | undefined;

  constructor(
    private readonly io: CommandIo,
    private readonly connectOptions: ConnectOptions,
  ) {}

  usage(): never {
    this.io.err(FSSCONFIG_USAGE);
    throw new Exit(1);
  }

  /** err(3)/errx(3): the message, then exit 1. */
  fail(message: string, error?: FssError, device?: string): never {
    this.io.err(`${PROG}: ${message}`);
    const detail = error === undefined ? undefined : errorDetail(error);
    if (detail !== undefined && device !== undefined) this.io.err(`${PROG}: ${device}: ${detail}`);
    throw new Exit(1);
  }

  close(): void {
    this.client?.close();
  }

  async configure(options: FssconfigOptions): Promise<void> {
    const [device, path, backup, cluster, size] = options.operands as [string, string, string, ...string[]];
    try {
      await stat(path);
    } catch (error) {
      this.fail(`stat ${path}: ${strerror(toFssError(error).code)}`);
    }
    const backupInfo = await stat(backup).catch(() => undefined);
    const backupIsDirectory = backupInfo?.isDirectory() ?? false;
    const backupIsDevice =
      backupInfo !== undefined && (backupInfo.isBlockDevice() || backupInfo.isCharacterDevice());
    if (options.operands.length > 5) this.usage();
    const clusterBytes = cluster === undefined ? 0n : this.number('cluster size', cluster, INT_MAX);
    const sizeBytes = size === undefined ? undefined : this.number('bs size', size, LLONG_MAX);
    const unit = this.unit(device);
    const onFull = this.onFull(options);
    const absoluteBackup = resolve(backup);
    if (sizeBytes !== undefined && sizeBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      this.fail(`truncate ${absoluteBackup}: ${strerror('EFBIG')}`);
    }
    // NetBSD: unlink on create with -x, or for a temporary file; only for regular files.
    const unlink = (options.unlink > 0 || backupIsDirectory) && !backupIsDevice;
    const client = await this.connect();
    try {
      await client.set(
        unitName(unit),
        {
          fss_mount: resolve(path),
          fss_bstore: absoluteBackup,
          fss_csize: Number(clusterBytes),
          fss_flags: unlink ? FSS_UNLINK_ON_CREATE : 0,
        },
        { ...(sizeBytes === undefined ? {} : { backupSize: Number(sizeBytes) }), ...onFull },
      );
    } catch (error) {
      const failure = toFssError(error);
      if (failure.syscall === 'open')
        this.fail(`open: ${device}: ${strerror(failure.code)}`, failure, device);
      if (failure.syscall === 'create') {
        this.fail(`create: ${failure.path ?? absoluteBackup}: ${strerror(failure.code)}`, failure, device);
      }
      this.fail(`${device}: FSSIOCSET: ${strerror(failure.code)}`, failure, device);
    }
    if (options.verbose > 0) await this.list(device, true);
  }

  async unconfigure(options: FssconfigOptions): Promise<void> {
    const device = options.operands[0] as string;
    if (options.verbose > 0) await this.list(device, true);
    const unit = this.unit(device);
    const client = await this.connect();
    try {
      await client.clear(unitName(unit));
    } catch (error) {
      const failure = toFssError(error);
      if (failure.syscall === 'open')
        this.fail(`open: ${device}: ${strerror(failure.code)}`, failure, device);
      this.fail(`${device}: FSSIOCCLR: ${strerror(failure.code)}`, failure, device);
    }
  }

  /** -l: one device, or every unit until the daemon says there are no more. */
  async list(device: string | undefined, verbose: boolean): Promise<void> {
    if (device !== undefined) {
      await this.listOne(device, this.unit(device), verbose, false);
      return;
    }
    for (let unit = 0; ; unit += 1) {
      if (!(await this.listOne(unitName(unit), unit, verbose, true))) return;
    }
  }

  /** Lists one unit; false when it does not exist and we are enumerating. */
  private async listOne(
    name: string,
    unit: number,
    verbose: boolean,
    enumerating: boolean,
  ): Promise<boolean> {
    const client = await this.connect();
    let flags = 0;
    try {
      flags = await client.getFlags(unitName(unit));
    } catch (error) {
      const failure = toFssError(error);
      if (failure.syscall === 'open') {
        if (enumerating && failure.code === 'ENXIO') return false;
        this.fail(`open: ${name}: ${strerror(failure.code)}`);
      }
      // NetBSD: when FSSIOFGET fails the flags are taken as 0.
    }
    try {
      const info = await client.get(unitName(unit));
      // -v also says whether the unit survives fssd's restart (fssd's status knows).
      const status = verbose
        ? (await client.status().catch(() => undefined))?.units.find((each) => each.unit === unitName(unit))
        : undefined;
      this.io.out(formatListLine(name, info, flags, verbose, status));
    } catch (error) {
      const failure = toFssError(error);
      if (failure.code !== 'ENXIO') this.fail(`${name}: FSSIOCGET: ${strerror(failure.code)}`, failure, name);
      this.io.out(formatNotInUse(name));
    }
    return true;
  }

  /** The unit a device operand names; NetBSD's opendisk would not find anything else. */
  private unit(device: string): number {
    const unit = parseUnitName(device);
    if (unit === undefined) this.fail(`open: ${device}: ${strerror('ENOENT')}`);
    return unit;
  }

  /** `--on-full` and `--on-full-timeout` (Linux additions), checked: the policy to ask for. */
  private onFull(options: FssconfigOptions): Pick<SetOptions, 'onFull' | 'onFullTimeoutMs'> {
    const { onFull, onFullTimeout } = options;
    const result: Pick<SetOptions, 'onFull' | 'onFullTimeoutMs'> = {};
    if (onFull !== undefined) {
      if (!ON_FULL_POLICIES.includes(onFull as OnFullPolicy)) {
        this.fail(`--on-full: ${strerror('EINVAL')}: '${onFull}' (invalidate or block)`);
      }
      result.onFull = onFull as OnFullPolicy;
    }
    if (onFullTimeout !== undefined) {
      const maxSeconds = ON_FULL_TIMEOUT_MS_MAX / 1000;
      if (
        !/^[0-9]+$/.test(onFullTimeout) ||
        Number(onFullTimeout) < 1 ||
        Number(onFullTimeout) > maxSeconds
      ) {
        this.fail(`--on-full-timeout: ${strerror('EINVAL')}: '${onFullTimeout}' (seconds, 1..${maxSeconds})`);
      }
      if (result.onFull !== 'block')
        this.fail(`--on-full-timeout: ${strerror('EINVAL')}: needs --on-full block`);
      result.onFullTimeoutMs = Number(onFullTimeout) * 1000;
    }
    return result;
  }

  private number(desc: string, text: string, max: bigint): bigint {
    try {
      return strsuftoll(desc, text, 0n, max);
    } catch (error) {
      if (error instanceof NumberSyntaxError) this.fail(error.message);
      throw error;
    }
  }

  private async connect(): Promise<FssClient> {
    if (this.client !== undefined) return this.client;
    try {
      this.client = await FssClient.connect(this.connectOptions);
    } catch (error) {
      const failure = toFssError(error);
      this.fail(`fssd: ${failure.description}`);
    }
    return this.client;
  }
}
