/**
 * fss, the companion of fssconfig for what NetBSD has no word for (SPEC §4):
 *
 *   fss origin add PATH [--name NAME] [--attach]      (--attach: also /dev/fss/NAME, as root)
 *   fss origin rm [--force] NAME
 *   fss origin ls
 *   fss status [--json] [--watch [--interval SECONDS] [--count N]]   (status.ts)
 *   fss changed fssN [--json] [--since fssM]          (extents written since fssN, or fssM..fssN)
 *   fss rollback fssN                                 (make the origin equal to fssN, then unconfigure it)
 *   fss dump [--format raw|qcow2] [--progress MODE] fssN FILE|-   (commands/dump.ts)
 *   fss backup [--since fssM] [--verify] [--progress MODE] fssN FILE   (commands/backup.ts)
 *   fss export fssN --tcp ADDR:PORT (--tls-certs DIR [--tls-verify-peer] | --tls-psk FILE | --insecure)
 *   fss export --stop fssN                            (the unit's NBD export over TCP, for backups)
 *
 * Errors read `fss: WHAT: strerror` (plus fssd's detail when it has one), exit 1; bad usage
 * prints the synopsis on stderr, exit 1.
 */
import { resolve } from 'node:path';
import type { RollbackStatus } from '@fss/control';
import { type ConnectOptions, FssClient, isOriginName } from '@fss/control';
import { FssError, isErrnoCode, strerror, toFssError } from '@fss/core';
import { commandUsage, helpText, usageText } from '@fss/manual';
import { parseExportArgs } from '../cli/export-args';
import { humanizeNumber } from '../cli/humanize';
import { formatOrigin, formatTcpExport } from '../cli/origin-format';
import { FSS_MANUAL, fssCommand } from '../manual/fss';
import { backup } from './backup';
import { dump } from './dump';
import { type CommandIo, Exit, errorDetail } from './io';
import { parseStatusArgs, runStatus } from './status';

/** Each copy command's usage, printed alone on its own usage errors and within FSS_USAGE. */
export const FSS_DUMP_USAGE = commandUsage(FSS_MANUAL, fssCommand('dump'));
export const FSS_BACKUP_USAGE = commandUsage(FSS_MANUAL, fssCommand('backup'));

/** The synopsis of every command, from the manual (manual/fss.ts). */
export const FSS_USAGE = usageText(FSS_MANUAL);

export async function fss(
  argv: readonly string[],
  io: CommandIo,
  connect: ConnectOptions = {},
): Promise<number> {
  let client: FssClient | undefined;
  const usage = (): never => {
    io.err(FSS_USAGE);
    throw new Exit(1);
  };
  const fail = (what: string, error: unknown): never => {
    const failure = toFssError(error);
    io.err(`fss: ${what}: ${strerror(failure.code)}`);
    const detail = errorDetail(failure);
    if (detail !== undefined) io.err(`fss: ${what}: ${detail}`);
    throw new Exit(1);
  };
  const connected = async (): Promise<FssClient> => {
    try {
      client ??= await FssClient.connect(connect);
    } catch (error) {
      fail('fssd', error);
    }
    return client as FssClient;
  };
  try {
    // `fss --help`, `fss origin --help`, `fss status --help`, `fss help [COMMAND…]`.
    if (argv.includes('--help') || argv[0] === 'help') {
      const words = argv.filter((arg) => arg !== '--help');
      io.out(helpText(FSS_MANUAL, words[0] === 'help' ? words.slice(1) : words));
      return 0;
    }
    const [command, ...rest] = argv;
    // The copy commands connect themselves (they also open the unit's export).
    if (command === 'dump') return await dump(rest, io, connect);
    if (command === 'backup') return await backup(rest, io, connect);
    if (command === 'status') {
      const options = parseStatusArgs(rest);
      if (options === null) return usage();
      if (typeof options === 'string') return fail('status', new FssError('EINVAL', options));
      return await runStatus(options, io, await connected(), fail);
    }
    if (command === 'changed') {
      const parsed = parseChangedArgs(rest) ?? usage();
      const result = await (await connected())
        .changed(parsed.unit, { since: parsed.since })
        .catch((error: unknown) => fail(`changed ${parsed.unit}`, error));
      if (parsed.json) io.out(JSON.stringify(result));
      else for (const extent of result.extents) io.out(`${extent.offset} ${extent.length}`);
      return 0;
    }
    if (command === 'rollback') {
      if (rest.length !== 1 || (rest[0] as string).startsWith('-')) usage();
      return await rollback(await connected(), rest[0] as string, io, fail);
    }
    if (command === 'export') {
      const parsed = parseExportArgs(rest);
      if (parsed === 'usage') return usage();
      if (parsed instanceof FssError) return fail('export', parsed);
      if (parsed.kind === 'stop') {
        await (await connected())
          .tcpUnexport(parsed.unit)
          .catch((error: unknown) => fail(`export --stop ${parsed.unit}`, error));
        return 0;
      }
      const { request } = parsed;
      const info = await (await connected())
        .tcpExport(request)
        .catch((error: unknown) => fail(`export ${request.unit}`, error));
      io.out(formatTcpExport(info));
      return 0;
    }
    if (command !== 'origin') usage();
    const [sub, ...args] = rest;
    if (sub === 'ls' && args.length === 0) {
      const origins = await (await connected())
        .originList()
        .catch((error: unknown) => fail('origin ls', error));
      for (const origin of origins) io.out(formatOrigin(origin));
      return 0;
    }
    const force = sub === 'rm' && args.includes('--force');
    const rmArgs = args.filter((arg) => arg !== '--force');
    if (sub === 'rm' && rmArgs.length === 1 && args.length - rmArgs.length <= 1) {
      const name = rmArgs[0] as string;
      if (!isOriginName(name)) fail(`origin rm ${name}`, new FssError('EINVAL', 'not an origin name'));
      await (await connected())
        .originRemove(name, { force })
        .catch((error: unknown) => fail(`origin rm ${name}`, error));
      return 0;
    }
    if (sub === 'add') {
      let path: string | undefined;
      let name: string | undefined;
      let attach = false;
      for (let index = 0; index < args.length; index += 1) {
        const arg = args[index] as string;
        if (arg === '--name') name = args[++index] ?? usage();
        else if (arg.startsWith('--name=')) name = arg.slice('--name='.length);
        else if (arg === '--attach') attach = true;
        else if (arg.startsWith('-') || path !== undefined) usage();
        else path = arg;
      }
      if (path === undefined) return usage();
      const origin = await (await connected())
        .originAdd(resolve(path), name, { attach })
        .catch((error: unknown) => fail(`origin add ${path}`, error));
      io.out(formatOrigin(origin));
      return 0;
    }
    return usage();
  } catch (error) {
    if (error instanceof Exit) return error.status;
    throw error;
  } finally {
    client?.close();
  }
}

/** How often `fss rollback` asks fssd for progress. */
const ROLLBACK_POLL_MS = 200;

/**
 * `fss rollback fssN`: starts the rollback in fssd, then shows its progress until it ends:
 * on a terminal one line redrawn (`fss0: rolling back: 42% (1.5M of 3.6M)`), otherwise one
 * JSON status line whenever it moved, the last one `done` or `failed`. Exit 0 once the
 * origin equals the snapshot (fssd then unconfigured the unit), 1 otherwise.
 */
async function rollback(
  client: FssClient,
  unit: string,
  io: CommandIo,
  fail: (what: string, error: unknown) => never,
): Promise<number> {
  const what = `rollback ${unit}`;
  let status = await client.rollback(unit).catch((error: unknown) => fail(what, error));
  const tty = io.isTTY === true && io.write !== undefined;
  let shown = '';
  const show = (current: RollbackStatus): void => {
    if (!tty) {
      const line = JSON.stringify(current);
      if (line !== shown) io.out(line);
      shown = line;
      return;
    }
    const percent =
      current.totalBytes === 0 ? 100 : Math.floor((current.doneBytes * 100) / current.totalBytes);
    const line =
      `${current.unit}: rolling back: ${percent}% ` +
      `(${humanizeNumber(current.doneBytes)} of ${humanizeNumber(current.totalBytes)})`;
    (io.write as (text: string) => void)(`\r\x1b[K${line}`);
  };
  show(status);
  while (status.state === 'running') {
    await new Promise((resolve) => setTimeout(resolve, ROLLBACK_POLL_MS));
    status = await client
      .rollbackStatus(unit)
      .catch((error: unknown) =>
        fail(
          what,
          new FssError(
            toFssError(error).code,
            'lost fssd while rolling back: the rollback resumes when fssd starts again',
          ),
        ),
      );
    show(status);
  }
  if (tty) (io.write as (text: string) => void)('\n');
  if (status.state === 'failed') {
    const error = status.error;
    fail(
      what,
      new FssError(
        error !== undefined && isErrnoCode(error.code) ? error.code : 'EIO',
        error?.detail ?? error?.message ?? 'failed',
      ),
    );
  }
  if (tty) io.out(`${status.unit}: rolled back onto its origin; unconfigured`);
  return 0;
}

/** `changed fssN [--json] [--since fssM]` in any order; undefined: bad usage. */
function parseChangedArgs(
  args: readonly string[],
): { unit: string; since: string | undefined; json: boolean } | undefined {
  let unit: string | undefined;
  let since: string | undefined;
  let json = false;
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index] as string;
    if (arg === '--json') json = true;
    else if (arg === '--since' && since === undefined && index + 1 < args.length) since = args[++index];
    else if (arg.startsWith('--since=') && since === undefined) since = arg.slice('--since='.length);
    else if (arg.startsWith('-') || unit !== undefined) return undefined;
    else unit = arg;
  }
  return unit === undefined ? undefined : { unit, since, json };
}

export { formatOrigin } from '../cli/origin-format';
export { formatStatus } from './status';
