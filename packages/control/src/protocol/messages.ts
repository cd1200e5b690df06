/**
 * The fssd control protocol: what travels over `$FSS_RUNDIR/fssd.sock`.
 *
 * One JSON object per line (UTF-8, `\n`-terminated, at most REQUEST_BYTES_MAX bytes), one
 * response line per request, in order. Requests carry the five fss ioctls under NetBSD's
 * names (`op`) and, optionally, numbers (`request`: when given it must match the name), with
 * NetBSD's argument shapes; plus the Linux-side origin and status requests.
 *
 *   → {"id":1,"op":"FSSIOCSET","unit":"fss0","mode":"rw",
 *      "arg":{"fss_mount":"/srv/disk.img","fss_bstore":"/var/tmp/bak","fss_csize":0,"fss_flags":0},
 *      "backup_size":1048576}
 *   ← {"id":1,"ok":true,"result":{"unit":"fss0","bstore":"/var/tmp/bak","export":"/run/fss/fss0.sock"}}
 *   → {"id":2,"op":"FSSIOCCLR","unit":"fss0"}
 *   ← {"id":2,"ok":false,"error":{"code":"EPERM","errno":1,"message":"Operation not permitted",
 *      "syscall":"FSSIOCCLR"}}
 *
 * `mode` is how the unit is "opened": `ro` (default) or `rw`. As with NetBSD's FWRITE check,
 * FSSIOCSET and FSSIOCCLR need `rw` (else EPERM). `backup_size` is a Linux addition carrying
 * fssconfig's `size` operand, because here the daemon, not the tool, creates the backup (so
 * that it can refuse before truncating anything): the length a regular backup file is
 * created or truncated to, default the origin's size.
 *
 * `changed` (issue 13) answers the extents of the origin written since `unit` was taken, or,
 * with `since` (an older unit of the same origin), those written between the two:
 *
 *   → {"id":3,"op":"changed","unit":"fss1","since":"fss0"}
 *   ← {"id":3,"ok":true,"result":{"unit":"fss1","since":"fss0","clusterSize":65536,
 *      "extents":[{"offset":0,"length":131072}]}}
 *
 * Extents are merged byte ranges at cluster granularity (`clusterSize`: the cluster of the
 * unit whose record they come from, `since`'s when given), the last clipped to the device.
 *
 * `on_full` and `on_full_timeout_ms` (Linux additions to FSSIOCSET) choose the unit's
 * store-full policy (OnFullPolicy): `"block"` makes origin writes that need a copy wait while
 * the store is full, for at most `on_full_timeout_ms` (1..86400000, default 30000), before
 * the unit is invalidated as under `"invalidate"`, the default. A timeout without `"block"`
 * is EINVAL.
 *
 * `rollback` (issue 13) starts making the origin equal to `unit` and answers at once; it runs
 * in the daemon, and `rollback-status` (or `status`, the unit's `rollback`) reports its
 * progress until it is `done` (the unit is then unconfigured) or `failed` (with the error):
 *
 *   → {"id":5,"op":"rollback","unit":"fss0"}
 *   ← {"id":5,"ok":true,"result":{"unit":"fss0","state":"running","doneBytes":0,"totalBytes":196608}}
 *   → {"id":6,"op":"rollback-status","unit":"fss0"}
 *   ← {"id":6,"ok":true,"result":{"unit":"fss0","state":"done","doneBytes":196608,"totalBytes":196608}}
 * `tcp-export` (issue 14) serves a unit's export over TCP too, for a backup host, on exactly
 * `host` and `port` (0: any free port; the answer says which), with TLS: `"tls":"x509"` and
 * `certs` (a qemu-nbd/nbdkit certificate directory; `verify_peer`: clients need a certificate
 * signed by its ca-cert.pem), `"tls":"psk"` and `psk` (a psktool key file), or `"tls":"none"`,
 * plaintext, which has to be asked for by name. One listener per unit; it goes with the unit.
 * `tcp-unexport` stops it. The files are read once, by fssd, when the listener starts:
 *
 *   → {"id":5,"op":"tcp-export","unit":"fss0","host":"127.0.0.1","port":10809,"tls":"psk",
 *      "psk":"/etc/fss/keys.psk"}
 *   ← {"id":5,"ok":true,"result":{"unit":"fss0","host":"127.0.0.1","port":10809,"tls":"psk",
 *      "url":"nbds://127.0.0.1:10809/fss0","clients":0}}
 *
 * `force` on `origin-rm` (a Linux addition) releases an origin even while NBD clients are
 * connected to its export: they are disconnected. Without it such an origin is EBUSY.
 *
 * Everything the daemon cannot use is EINVAL: bad JSON, a line too long, an unknown `op`, a
 * `request` number that does not match, a missing or mistyped field, unknown fields.
 */
import { FSS_IOCTLS, FssError, type FssGet, type FssIoctlName, type FssSet, strerror } from '@fss/core';

/** A request line longer than this is refused (EINVAL) and the connection closed. */
export const REQUEST_BYTES_MAX = 64 * 1024;
/** A backup path or origin path longer than this is EINVAL (Linux PATH_MAX). */
export const PATH_BYTES_MAX = 4096;

export type RequestId = number | string | null;
/**
 * What a full backing store does to a unit (FSSIOCSET's Linux addition `on_full`):
 * `invalidate` (NetBSD's behaviour, the default) or `block` (origin writes that need a copy
 * wait for space, up to `on_full_timeout_ms`, then the unit is invalidated).
 */
export type OnFullPolicy = 'invalidate' | 'block';
export const ON_FULL_POLICIES: readonly OnFullPolicy[] = ['invalidate', 'block'];
/** The longest `on_full_timeout_ms` (a day). */
export const ON_FULL_TIMEOUT_MS_MAX = 86_400_000;
export type OpenMode = 'ro' | 'rw';

export type IoctlRequest =
  | {
      op: 'FSSIOCSET';
      unit: string;
      mode: OpenMode;
      arg: FssSet;
      backup_size?: number;
      on_full?: OnFullPolicy;
      on_full_timeout_ms?: number;
    }
  | { op: 'FSSIOCGET'; unit: string; mode: OpenMode }
  | { op: 'FSSIOCCLR'; unit: string; mode: OpenMode }
  | { op: 'FSSIOFSET'; unit: string; mode: OpenMode; arg: number }
  | { op: 'FSSIOFGET'; unit: string; mode: OpenMode };

export type ControlRequest =
  | IoctlRequest
  | { op: 'origin-add'; path: string; name?: string; attach?: boolean }
  | { op: 'origin-rm'; name: string; force?: boolean }
  | { op: 'origin-ls' }
  | { op: 'changed'; unit: string; since?: string }
  | { op: 'rollback'; unit: string }
  | { op: 'rollback-status'; unit: string }
  | TcpExportRequest
  | { op: 'tcp-unexport'; unit: string }
  | { op: 'status' }
  | { op: 'ping' };

export type ControlOp = ControlRequest['op'];

/** How a TCP export protects its traffic: x509 certificates, a pre-shared key, or nothing. */
export type TcpExportTls = 'x509' | 'psk' | 'none';

export interface TcpExportRequest {
  op: 'tcp-export';
  unit: string;
  /** The address to bind, exactly (no default: an IP address or a host name). */
  host: string;
  /** 0..65535; 0 picks a free port. */
  port: number;
  tls: TcpExportTls;
  /** x509: the certificate directory (ca-cert.pem, server-cert.pem, server-key.pem). */
  certs?: string;
  /** x509: clients must present a certificate signed by ca-cert.pem. */
  verify_peer?: boolean;
  /** psk: the psktool key file (`username:hexkey` lines). */
  psk?: string;
}

/** A unit's TCP listener, as `tcp-export` and `status` report it. */
export interface TcpExportInfo {
  unit: string;
  host: string;
  port: number;
  tls: TcpExportTls;
  /** x509 only: client certificates are checked. */
  verifyPeer?: boolean;
  /** What a client connects to: `nbds://HOST:PORT/fssN` (`nbd://` without TLS). */
  url: string;
  /** NBD clients connected over TCP now. */
  clients: number;
}

export interface SetResult {
  unit: string;
  /** The backup actually used: the temporary file's path when `fss_bstore` is a directory. */
  bstore: string;
  /** The unit's NBD socket. */
  export: string;
  origin: string;
  /** Its kernel block device (`/dev/fssN`), when fssd makes devices (root). */
  device?: string;
}

/** A byte range of a device. */
export interface Extent {
  offset: number;
  length: number;
}

/** What `changed` answers. */
export interface ChangedResult {
  unit: string;
  /** The older unit the changes are counted from; null: since `unit` was taken. */
  since: string | null;
  /** The granularity of `extents`. */
  clusterSize: number;
  extents: Extent[];
}

/** A rollback's progress (`rollback`, `rollback-status`, a unit's status while it runs). */
export interface RollbackStatus {
  unit: string;
  /** `done`: the origin equals the snapshot and the unit is unconfigured. */
  state: 'running' | 'done' | 'failed';
  /** Bytes of saved clusters written back so far (a resumed rollback counts what it skipped). */
  doneBytes: number;
  /** Bytes of saved clusters to write back. */
  totalBytes: number;
  /** Why it failed. */
  error?: WireError;
}

export interface OriginInfo {
  name: string;
  path: string;
  size: number;
  /** Added by `fss origin add` (stays) or implicitly by FSSIOCSET (released with its last unit). */
  explicit: boolean;
  export: string;
  exportClients: number;
  units: string[];
  /** Its kernel block device (`/dev/fss/NAME`), when attached. */
  device?: string;
  /** The block device behind `device` (`/dev/loopN`). */
  loop?: string;
  /** In `status` only: bytes per second written to the origin, a moving average (rate-meter.ts). */
  writeRate?: number;
}

export interface UnitStatus {
  unit: string;
  state: 'idle' | 'creating' | 'active' | 'destroying';
  flags: number;
  origin?: string;
  bstore?: string;
  export?: string;
  exportClients?: number;
  valid?: boolean;
  invalidReason?: string;
  info?: FssGet;
  /** Recorded in fssd's state directory: comes back after fssd's crash or restart. */
  persistent?: boolean;
  /** A persistent unit's durability: `process` (survives fssd's death) or `power` (power loss too). */
  durability?: 'none' | 'process' | 'power';
  /** Its kernel block device (`/dev/fssN`), when fssd makes devices (root). */
  device?: string;
  /** The block device behind `device` (`/dev/loopN`). */
  loop?: string;
  /** Its store-full policy, and under `block` how long writes wait for space (ms). */
  onFull?: OnFullPolicy;
  onFullTimeoutMs?: number;
  /** Under `block`: origin writes that need a copy are waiting for space on the store now. */
  waitingForSpace?: boolean;
  /** Origin clusters saved so far (copied to the cache or the store). */
  clustersCopied?: number;
  /** Bytes of the backing store in use: header, indirect table and stored clusters. */
  storeBytesUsed?: number;
  /**
   * Bytes the backing store can hold: a raw device's size; for a file, what it holds plus
   * the space left on its filesystem. Absent when it cannot be told.
   */
  storeBytesLimit?: number;
  /** Bytes the store needs once every cluster is copied: it never fills if it can hold that. */
  storeBytesMax?: number;
  /** Bytes per second added to the store, a moving average (fssd's rate-meter.ts). */
  writeRate?: number;
  /** At `writeRate`, seconds until the store is full; null when it is not filling or never fills. */
  secondsToFull?: number | null;
  /** A rollback of the unit onto its origin, while one runs or after one failed. */
  rollback?: RollbackStatus;
  /** Its TCP listener, when `tcp-export` started one. */
  tcp?: TcpExportInfo;
}

export interface DaemonStatus {
  pid: number;
  runDir: string;
  /** fssd's package version. */
  version?: string;
  unitCount: number;
  units: UnitStatus[];
  origins: OriginInfo[];
}

/** What each op answers with. */
export interface ControlResults {
  FSSIOCSET: SetResult;
  FSSIOCGET: FssGet;
  FSSIOCCLR: Record<string, never>;
  FSSIOFSET: Record<string, never>;
  FSSIOFGET: { flags: number };
  'origin-add': OriginInfo;
  'origin-rm': Record<string, never>;
  'origin-ls': OriginInfo[];
  changed: ChangedResult;
  rollback: RollbackStatus;
  'rollback-status': RollbackStatus;
  'tcp-export': TcpExportInfo;
  'tcp-unexport': Record<string, never>;
  status: DaemonStatus;
  ping: { pid: number; runDir: string };
}

export interface WireError {
  code: string;
  errno: number;
  /** strerror(code). */
  message: string;
  /** What exactly went wrong, when there is more to say than strerror. */
  detail?: string;
  syscall?: string;
  path?: string;
}

export type ControlResponse =
  | { id: RequestId; ok: true; result: unknown }
  | { id: RequestId; ok: false; error: WireError };

const IOCTL_OPS = new Set<string>(Object.keys(FSS_IOCTLS));
const OTHER_OPS = new Set<string>([
  'origin-add',
  'origin-rm',
  'origin-ls',
  'changed',
  'rollback',
  'rollback-status',
  'tcp-export',
  'tcp-unexport',
  'status',
  'ping',
]);
const INT32_MAX = 2 ** 31 - 1;

export function isIoctlOp(op: string): op is FssIoctlName {
  return IOCTL_OPS.has(op);
}

function invalid(detail: string): FssError {
  return new FssError('EINVAL', detail, { syscall: 'request' });
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function onlyKeys(object: Json, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) throw invalid(`${where}: unknown field "${key}"`);
  }
}

function stringField(object: Json, key: string, where: string, maxBytes = PATH_BYTES_MAX): string {
  const value = object[key];
  if (typeof value !== 'string') throw invalid(`${where}: "${key}" must be a string`);
  if (Buffer.byteLength(value) > maxBytes)
    throw invalid(`${where}: "${key}" is longer than ${maxBytes} bytes`);
  if (value.includes('\0')) throw invalid(`${where}: "${key}" contains a NUL byte`);
  return value;
}

function intField(object: Json, key: string, where: string, min: number, max: number): number {
  const value = object[key];
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${where}: "${key}" must be an integer in ${min}..${max}`);
  }
  return value;
}

/** The request id, when the line has a usable one: errors are answered under it. */
export function requestIdOf(parsed: unknown): RequestId {
  if (!isObject(parsed)) return null;
  const id = parsed['id'];
  if (typeof id === 'number' && Number.isSafeInteger(id)) return id;
  if (typeof id === 'string' && id.length <= 128) return id;
  return null;
}

/** Checks a parsed JSON line and returns the typed request, or throws EINVAL. */
export function validateRequest(parsed: unknown): ControlRequest {
  if (!isObject(parsed)) throw invalid('a request is a JSON object');
  const op = parsed['op'];
  if (typeof op !== 'string') throw invalid('"op" must be a string');
  if (isIoctlOp(op)) return validateIoctl(op, parsed);
  if (!OTHER_OPS.has(op)) throw invalid(`unknown op "${op.slice(0, 64)}"`);
  switch (op) {
    case 'origin-add': {
      onlyKeys(parsed, ['id', 'op', 'path', 'name', 'attach'], op);
      const request: ControlRequest & { op: 'origin-add' } = { op, path: stringField(parsed, 'path', op) };
      if (parsed['name'] !== undefined) request.name = stringField(parsed, 'name', op, 64);
      if (parsed['attach'] !== undefined) {
        if (typeof parsed['attach'] !== 'boolean') throw invalid(`${op}: "attach" must be true or false`);
        request.attach = parsed['attach'];
      }
      return request;
    }
    case 'origin-rm': {
      onlyKeys(parsed, ['id', 'op', 'name', 'force'], op);
      const request: ControlRequest & { op: 'origin-rm' } = { op, name: stringField(parsed, 'name', op, 64) };
      if (parsed['force'] !== undefined) {
        if (typeof parsed['force'] !== 'boolean') throw invalid(`${op}: "force" must be true or false`);
        request.force = parsed['force'];
      }
      return request;
    }
    case 'changed': {
      onlyKeys(parsed, ['id', 'op', 'unit', 'since'], op);
      const request: ControlRequest & { op: 'changed' } = { op, unit: stringField(parsed, 'unit', op, 64) };
      if (parsed['since'] !== undefined) request.since = stringField(parsed, 'since', op, 64);
      return request;
    }
    case 'tcp-export':
      return validateTcpExport(parsed);
    case 'rollback':
    case 'rollback-status':
    case 'tcp-unexport':
      onlyKeys(parsed, ['id', 'op', 'unit'], op);
      return { op, unit: stringField(parsed, 'unit', op, 64) };
    default:
      onlyKeys(parsed, ['id', 'op'], op);
      return { op } as ControlRequest;
  }
}

/** Host name or address: what getaddrinfo takes, nothing that could be an option or a path. */
const HOST_PATTERN = /^[0-9A-Za-z.:%_-]{1,255}$/;

function validateTcpExport(parsed: Json): TcpExportRequest {
  const op = 'tcp-export';
  onlyKeys(parsed, ['id', 'op', 'unit', 'host', 'port', 'tls', 'certs', 'verify_peer', 'psk'], op);
  const unit = stringField(parsed, 'unit', op, 64);
  const host = stringField(parsed, 'host', op, 255);
  if (!HOST_PATTERN.test(host)) throw invalid(`${op}: "host" must be an IP address or a host name`);
  const port = intField(parsed, 'port', op, 0, 65535);
  const tls = parsed['tls'];
  if (tls !== 'x509' && tls !== 'psk' && tls !== 'none') {
    throw invalid(`${op}: "tls" must be "x509", "psk" or "none" (plaintext, asked for by name)`);
  }
  const request: TcpExportRequest = { op, unit, host, port, tls };
  const has = (key: string): boolean => parsed[key] !== undefined;
  if (tls !== 'x509' && (has('certs') || has('verify_peer'))) {
    throw invalid(`${op}: "certs" and "verify_peer" go with "tls":"x509"`);
  }
  if (tls !== 'psk' && has('psk')) throw invalid(`${op}: "psk" goes with "tls":"psk"`);
  if (tls === 'x509') {
    request.certs = stringField(parsed, 'certs', op);
    if (has('verify_peer')) {
      if (typeof parsed['verify_peer'] !== 'boolean')
        throw invalid(`${op}: "verify_peer" must be true or false`);
      request.verify_peer = parsed['verify_peer'];
    }
  }
  if (tls === 'psk') request.psk = stringField(parsed, 'psk', op);
  return request;
}

function validateIoctl(op: FssIoctlName, parsed: Json): IoctlRequest {
  const setOnly = ['backup_size', 'on_full', 'on_full_timeout_ms'];
  onlyKeys(parsed, ['id', 'op', 'request', 'unit', 'mode', 'arg', ...setOnly], op);
  if (parsed['request'] !== undefined && parsed['request'] !== FSS_IOCTLS[op]) {
    throw invalid(`${op}: "request" must be ${FSS_IOCTLS[op]} (0x${FSS_IOCTLS[op].toString(16)})`);
  }
  const unit = stringField(parsed, 'unit', op, 64);
  const mode = parsed['mode'] ?? 'ro';
  if (mode !== 'ro' && mode !== 'rw') throw invalid(`${op}: "mode" must be "ro" or "rw"`);
  for (const key of setOnly) {
    if (op !== 'FSSIOCSET' && parsed[key] !== undefined) throw invalid(`${op}: unexpected "${key}"`);
  }
  switch (op) {
    case 'FSSIOCSET': {
      const arg = parsed['arg'];
      if (!isObject(arg)) throw invalid('FSSIOCSET: "arg" must be a struct fss_set object');
      onlyKeys(arg, ['fss_mount', 'fss_bstore', 'fss_csize', 'fss_flags'], 'fss_set');
      const set: FssSet = {
        fss_mount: stringField(arg, 'fss_mount', 'fss_set'),
        fss_bstore: stringField(arg, 'fss_bstore', 'fss_set'),
        // blksize_t is 32-bit signed on NetBSD.
        fss_csize: intField(arg, 'fss_csize', 'fss_set', 0, INT32_MAX),
        fss_flags: intField(arg, 'fss_flags', 'fss_set', -(2 ** 31), INT32_MAX),
      };
      const request: IoctlRequest & { op: 'FSSIOCSET' } = { op, unit, mode, arg: set };
      if (parsed['backup_size'] !== undefined)
        request.backup_size = intField(parsed, 'backup_size', op, 0, Number.MAX_SAFE_INTEGER);
      Object.assign(request, onFullFields(parsed));
      return request;
    }
    case 'FSSIOFSET':
      return { op, unit, mode, arg: intField(parsed, 'arg', op, -(2 ** 31), INT32_MAX) };
    default:
      if (parsed['arg'] !== undefined) throw invalid(`${op}: takes no "arg"`);
      return { op, unit, mode };
  }
}

/** FSSIOCSET's `on_full` and `on_full_timeout_ms`, checked. */
function onFullFields(parsed: Json): { on_full?: OnFullPolicy; on_full_timeout_ms?: number } {
  const fields: { on_full?: OnFullPolicy; on_full_timeout_ms?: number } = {};
  const policy = parsed['on_full'];
  if (policy !== undefined) {
    if (!ON_FULL_POLICIES.includes(policy as OnFullPolicy))
      throw invalid('FSSIOCSET: "on_full" must be "invalidate" or "block"');
    fields.on_full = policy as OnFullPolicy;
  }
  if (parsed['on_full_timeout_ms'] !== undefined) {
    if (fields.on_full !== 'block') throw invalid('FSSIOCSET: "on_full_timeout_ms" needs "on_full":"block"');
    fields.on_full_timeout_ms = intField(
      parsed,
      'on_full_timeout_ms',
      'FSSIOCSET',
      1,
      ON_FULL_TIMEOUT_MS_MAX,
    );
  }
  return fields;
}

/** The wire form of an error. */
export function toWireError(error: FssError): WireError {
  const wire: WireError = { code: error.code, errno: error.errno, message: strerror(error.code) };
  if (error.description !== wire.message) wire.detail = error.description;
  if (error.syscall !== undefined) wire.syscall = error.syscall;
  if (error.path !== undefined) wire.path = error.path;
  return wire;
}
