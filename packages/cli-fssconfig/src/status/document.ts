/**
 * `fss status --json`: the status document, schema version 1 (docs/status-schema.md; the JSON
 * Schema ships as @fss/cli-fssconfig/status.schema.json).
 *
 * The document is mapped field by field from fssd's status answer (the control protocol's
 * DaemonStatus), so the wire may grow without changing what scripts read: a field is added
 * here, and to the schema, on purpose. Every key is always present; what is unknown or does
 * not apply is null. Units are the configured (active) ones, in unit order; `daemon.unitCount`
 * says how many units fssd has in all. Sizes are bytes, rates bytes per second, times ISO 8601
 * in UTC.
 *
 * Compatibility: adding a key keeps schemaVersion; removing or renaming one, or changing its
 * meaning or type, increases it.
 */
import type { DaemonStatus, OriginInfo, UnitStatus } from '@fss/control';
import { FSS_UNCONFIG_ON_CLOSE } from '@fss/core';

export const STATUS_SCHEMA_VERSION = 1;

export interface StatusDocument {
  schemaVersion: typeof STATUS_SCHEMA_VERSION;
  daemon: { pid: number; runDir: string; version: string | null; unitCount: number };
  units: UnitDocument[];
  origins: OriginDocument[];
}

export interface UnitDocument {
  name: string;
  origin: string | null;
  /** The path the snapshot was configured with (fsg_mount): a device, an image or a mount point. */
  mount: string;
  taken: string;
  valid: boolean;
  invalidReason: string | null;
  persistent: boolean;
  durability: 'none' | 'process' | 'power';
  unconfigOnClose: boolean;
  /** What a full store does: invalidate the snapshot, or block the origin writes that need a copy. */
  onFull: 'invalidate' | 'block';
  /** Under `block`: how long writes wait for space before the unit is invalidated. */
  onFullTimeoutMs: number | null;
  /** Under `block`: origin writes are waiting for space on the store now. */
  waitingForSpace: boolean;
  clusterSize: number;
  clusterCount: number;
  clustersCopied: number | null;
  storeBytesUsed: number;
  storeBytesLimit: number | null;
  storeBytesMax: number | null;
  writeRate: number;
  secondsToFull: number | null;
  backup: string | null;
  export: string | null;
  device: string | null;
  loop: string | null;
  clients: number;
  /** Its TCP listener (`fss export --tcp`), null when it has none. */
  tcp: TcpExportDocument | null;
}

export interface TcpExportDocument {
  /** What a client connects to: `nbds://HOST:PORT/fssN` (`nbd://` when plaintext). */
  url: string;
  host: string;
  port: number;
  tls: 'x509' | 'psk' | 'none';
  /** x509: clients must present a certificate signed by the CA; false otherwise. */
  verifyPeer: boolean;
  clients: number;
}

export interface OriginDocument {
  name: string;
  path: string;
  size: number;
  explicit: boolean;
  units: string[];
  export: string;
  device: string | null;
  loop: string | null;
  clients: number;
  writeRate: number;
}

export function statusDocument(status: DaemonStatus): StatusDocument {
  return {
    schemaVersion: STATUS_SCHEMA_VERSION,
    daemon: {
      pid: status.pid,
      runDir: status.runDir,
      version: status.version ?? null,
      unitCount: status.unitCount,
    },
    units: status.units.flatMap((unit) => {
      const document = unitDocument(unit);
      return document === undefined ? [] : [document];
    }),
    origins: status.origins.map(originDocument),
  };
}

function unitDocument(unit: UnitStatus): UnitDocument | undefined {
  const info = unit.info;
  if (unit.state !== 'active' || info === undefined) return undefined;
  const takenMs = info.fsg_time.tv_sec * 1000 + Math.floor(info.fsg_time.tv_usec / 1000);
  return {
    name: unit.unit,
    origin: unit.origin ?? null,
    mount: info.fsg_mount,
    taken: new Date(takenMs).toISOString(),
    valid: unit.valid === true,
    invalidReason: unit.valid === true ? null : (unit.invalidReason ?? 'unknown'),
    persistent: unit.persistent === true,
    durability: unit.persistent === true ? (unit.durability ?? 'process') : 'none',
    unconfigOnClose: (unit.flags & FSS_UNCONFIG_ON_CLOSE) !== 0,
    onFull: unit.onFull ?? 'invalidate',
    onFullTimeoutMs: unit.onFull === 'block' ? (unit.onFullTimeoutMs ?? null) : null,
    waitingForSpace: unit.waitingForSpace === true,
    clusterSize: info.fsg_csize,
    clusterCount: info.fsg_mount_size,
    clustersCopied: unit.clustersCopied ?? null,
    storeBytesUsed: unit.storeBytesUsed ?? info.fsg_bs_size * info.fsg_csize,
    storeBytesLimit: unit.storeBytesLimit ?? null,
    storeBytesMax: unit.storeBytesMax ?? null,
    writeRate: unit.writeRate ?? 0,
    secondsToFull: unit.secondsToFull ?? null,
    backup: unit.bstore ?? null,
    export: unit.export ?? null,
    device: unit.device ?? null,
    loop: unit.loop ?? null,
    clients: unit.exportClients ?? 0,
    tcp:
      unit.tcp === undefined
        ? null
        : {
            url: unit.tcp.url,
            host: unit.tcp.host,
            port: unit.tcp.port,
            tls: unit.tcp.tls,
            verifyPeer: unit.tcp.verifyPeer === true,
            clients: unit.tcp.clients,
          },
  };
}

function originDocument(origin: OriginInfo): OriginDocument {
  return {
    name: origin.name,
    path: origin.path,
    size: origin.size,
    explicit: origin.explicit,
    units: origin.units,
    export: origin.export,
    device: origin.device ?? null,
    loop: origin.loop ?? null,
    clients: origin.exportClients,
    writeRate: origin.writeRate ?? 0,
  };
}
