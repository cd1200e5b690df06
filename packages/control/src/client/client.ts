/**
 * The typed control client: everything fssconfig and fss do, for Node programs.
 *
 *   const client = await FssClient.connect();          // starts fssd when needed
 *   await client.set('fss0', { fss_mount: '/srv/disk.img', fss_bstore: '/var/tmp/b',
 *                              fss_csize: 0, fss_flags: 0 });
 *   const info = await client.get('fss0');
 *   await client.clear('fss0');
 *   client.close();
 *
 * Each call sends one request line and resolves with its answer; failures reject with an
 * FssError carrying the daemon's errno code, its detail text and the request as `syscall`.
 * Requests may be pipelined: answers come back in order and are matched by id.
 */
import { createConnection, type Socket } from 'node:net';
import {
  FSS_IOCTLS,
  FssError,
  type FssGet,
  type FssIoctlName,
  type FssSet,
  isErrnoCode,
  strerror,
  toFssError,
} from '@fss/core';
import { LineSplitter } from '../protocol/lines';
import type {
  ChangedResult,
  ControlOp,
  ControlResponse,
  ControlResults,
  DaemonStatus,
  OnFullPolicy,
  OpenMode,
  OriginInfo,
  RollbackStatus,
  SetResult,
  TcpExportInfo,
  TcpExportRequest,
  WireError,
} from '../protocol/messages';
import { defaultRunDir, runPaths } from '../rundir';
import { type DaemonCommand, startDaemon } from './spawn';

/**
 * Answers are small, but for `changed` of a scattered write pattern (about 40 bytes an
 * extent); a runaway peer is cut off well before it hurts.
 */
const RESPONSE_BYTES_MAX = 64 * 1024 * 1024;

/** FSSIOCSET's Linux additions (see the protocol's `backup_size`, `on_full`, `on_full_timeout_ms`). */
export interface SetOptions {
  backupSize?: number;
  onFull?: OnFullPolicy;
  onFullTimeoutMs?: number;
}

export interface ConnectOptions {
  /** The run directory (default: $FSS_RUNDIR, then SPEC §4's defaults). */
  runDir?: string;
  /** Start fssd when nobody answers (default true). */
  autostart?: boolean;
  /** How to run fssd (default: the fssd next to this module). */
  daemonCommand?: DaemonCommand;
  /** How long to wait for a starting daemon (default 30 s). */
  startTimeoutMs?: number;
}

interface Pending {
  op: string;
  resolve: (value: unknown) => void;
  reject: (error: FssError) => void;
}

export class FssClient {
  readonly runDir: string;
  private readonly socket: Socket;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failure: FssError | undefined;

  private constructor(socket: Socket, runDir: string) {
    this.socket = socket;
    this.runDir = runDir;
    const splitter = new LineSplitter(RESPONSE_BYTES_MAX);
    socket.on('data', (chunk: Buffer) => {
      const { lines, overflow } = splitter.push(chunk);
      for (const line of lines) this.answer(line);
      if (overflow) this.fail(new FssError('EPROTO', 'fssd sent an oversized answer'));
    });
    socket.on('error', (error) => this.fail(toFssError(error, { syscall: 'read' })));
    socket.on('close', () => this.fail(new FssError('ECONNRESET', 'fssd closed the connection')));
  }

  /** Connects to the daemon of `runDir`, starting it first when needed and allowed. */
  static async connect(options: ConnectOptions = {}): Promise<FssClient> {
    const runDir = options.runDir ?? defaultRunDir();
    const path = runPaths(runDir).control;
    try {
      return new FssClient(await openSocket(path), runDir);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (options.autostart === false || (code !== 'ENOENT' && code !== 'ECONNREFUSED')) {
        const failure = toFssError(error);
        throw new FssError(failure.code, `cannot reach fssd at ${path}: ${strerror(failure.code)}`, {
          syscall: 'connect',
          path,
          cause: error,
        });
      }
    }
    let socket: Socket | undefined;
    await startDaemon({
      runDir,
      command: options.daemonCommand,
      timeoutMs: options.startTimeoutMs,
      probe: async () => {
        socket = await openSocket(path).catch(() => undefined);
        return socket !== undefined;
      },
    });
    return new FssClient(socket as Socket, runDir);
  }

  /** Sends one raw request object and resolves with its result. */
  request<Op extends ControlOp>(op: Op, fields: Record<string, unknown> = {}): Promise<ControlResults[Op]> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const id = this.nextId++;
    const line = `${JSON.stringify({ id, op, ...fields })}\n`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { op, resolve: resolve as (value: unknown) => void, reject });
      this.socket.write(line);
    });
  }

  /** Issues one of the five fss ioctls with its NetBSD request number. */
  ioctl<Op extends FssIoctlName>(
    op: Op,
    unit: string,
    fields: {
      mode?: OpenMode;
      arg?: unknown;
      backup_size?: number;
      on_full?: OnFullPolicy;
      on_full_timeout_ms?: number;
    } = {},
  ): Promise<ControlResults[Op]> {
    return this.request(op, { request: FSS_IOCTLS[op], unit, ...fields });
  }

  /**
   * FSSIOCSET: configures `unit`. `backupSize` is fssconfig's `size` operand; `onFull` and
   * `onFullTimeoutMs` the store-full policy (Linux additions, see OnFullPolicy).
   */
  set(unit: string, set: FssSet, options: SetOptions = {}): Promise<SetResult> {
    return this.ioctl('FSSIOCSET', unit, {
      mode: 'rw',
      arg: set,
      backup_size: options.backupSize,
      on_full: options.onFull,
      on_full_timeout_ms: options.onFullTimeoutMs,
    });
  }

  /** FSSIOCGET: ENXIO when the unit is not configured. */
  get(unit: string): Promise<FssGet> {
    return this.ioctl('FSSIOCGET', unit);
  }

  /** FSSIOCCLR: ENXIO when the unit is not configured. */
  async clear(unit: string): Promise<void> {
    await this.ioctl('FSSIOCCLR', unit, { mode: 'rw' });
  }

  async setFlags(unit: string, flags: number): Promise<void> {
    await this.ioctl('FSSIOFSET', unit, { arg: flags });
  }

  async getFlags(unit: string): Promise<number> {
    return (await this.ioctl('FSSIOFGET', unit)).flags;
  }

  /** Claims and exports an origin; `attach` also makes it a kernel block device (root). */
  originAdd(path: string, name?: string, options: { attach?: boolean } = {}): Promise<OriginInfo> {
    return this.request('origin-add', {
      path,
      ...(name === undefined ? {} : { name }),
      ...(options.attach === true ? { attach: true } : {}),
    });
  }

  /** Releases an origin; `force` disconnects its export's NBD clients instead of EBUSY. */
  async originRemove(name: string, options: { force?: boolean } = {}): Promise<void> {
    await this.request('origin-rm', options.force === true ? { name, force: true } : { name });
  }

  /**
   * The extents of the origin written since `unit` was taken, or since the older unit
   * `options.since` of the same origin (issue 13).
   */
  changed(unit: string, options: { since?: string } = {}): Promise<ChangedResult> {
    return this.request('changed', options.since === undefined ? { unit } : { unit, since: options.since });
  }

  /**
   * Starts making the origin equal to `unit` (its saved clusters written back through the
   * origin's copy-on-write path); it runs in fssd: poll `rollbackStatus` until it is done.
   */
  rollback(unit: string): Promise<RollbackStatus> {
    return this.request('rollback', { unit });
  }

  /** The progress of `unit`'s rollback; ENOENT when none ran since fssd started. */
  rollbackStatus(unit: string): Promise<RollbackStatus> {
    return this.request('rollback-status', { unit });
  }

  /**
   * Serves `unit`'s export over TCP on `host`:`port` with TLS (`tls` x509 with `certs`, psk
   * with `psk`) or, only when `tls` is 'none', in plaintext.
   */
  tcpExport(request: Omit<TcpExportRequest, 'op'>): Promise<TcpExportInfo> {
    return this.request('tcp-export', { ...request });
  }

  /** Stops `unit`'s TCP listener (its clients are disconnected). */
  async tcpUnexport(unit: string): Promise<void> {
    await this.request('tcp-unexport', { unit });
  }

  originList(): Promise<OriginInfo[]> {
    return this.request('origin-ls');
  }

  status(): Promise<DaemonStatus> {
    return this.request('status');
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  private answer(line: string): void {
    let response: ControlResponse;
    try {
      response = JSON.parse(line) as ControlResponse;
    } catch {
      this.fail(new FssError('EPROTO', 'fssd sent a line that is not JSON'));
      return;
    }
    // id null answers no request of ours (we always send one): it is about the connection
    // itself (fssd refused us, or a line was too long), and fails everything pending.
    if (response.id === null && !response.ok) {
      this.fail(fromWire(response.error, 'connect'));
      return;
    }
    const id = typeof response.id === 'number' ? response.id : -1;
    const pending = this.pending.get(id);
    if (pending === undefined) return;
    this.pending.delete(id);
    if (response.ok) pending.resolve(response.result);
    else pending.reject(fromWire(response.error, pending.op));
  }

  private fail(error: FssError): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
    this.socket.destroy();
  }
}

/** An FssError from the wire form; unknown codes become EIO (never a wrong meaning). */
export function fromWire(error: WireError, op: string): FssError {
  const code = isErrnoCode(error.code) ? error.code : 'EIO';
  return new FssError(code, error.detail ?? error.message, {
    syscall: error.syscall ?? op,
    path: error.path,
  });
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}
