/**
 * Opening a unit for reading: fssd says where its export is and whether it is valid; the
 * snapshot's bytes come over that export with @fss/nbd's client. The unit is identified by its
 * name and the moment it was taken, so a unit unconfigured and configured again under the same
 * name while we read is noticed at the end instead of passing as the same snapshot.
 */
import type { FssClient, UnitStatus } from '@fss/control';
import { parseUnitName, unitName } from '@fss/control';
import { FssError } from '@fss/core';
import { NbdClient } from '@fss/nbd';

export interface SnapshotSource {
  readonly unit: string;
  /** The unit's NBD socket. */
  readonly socket: string;
  readonly size: number;
  readonly clusterSize: number;
  readonly takenSeconds: number;
  readonly reader: NbdClient;
  /** Fails (ENXIO with fssd's reason) unless the unit is still the same valid snapshot. */
  checkStillValid(): Promise<void>;
  close(): void;
}

/** The unit's status, or ENXIO (not configured) / ENXIO (invalid, with the reason). */
export async function activeUnit(control: FssClient, name: string): Promise<UnitStatus> {
  const number = parseUnitName(name);
  if (number === undefined) throw new FssError('EINVAL', `not a unit name (fssN): ${name}`);
  const unit = unitName(number);
  const status = (await control.status()).units.find((candidate) => candidate.unit === unit);
  if (status === undefined) throw new FssError('ENXIO', `${unit}: no such unit`);
  if (status.state !== 'active' || status.info === undefined || status.export === undefined) {
    throw new FssError('ENXIO', `${unit}: not configured`);
  }
  if (status.valid === false) {
    throw new FssError('ENXIO', `${unit}: snapshot invalid: ${status.invalidReason ?? 'unknown reason'}`);
  }
  return status;
}

export async function openSnapshot(control: FssClient, name: string): Promise<SnapshotSource> {
  const status = await activeUnit(control, name);
  const info = status.info as NonNullable<UnitStatus['info']>;
  const socket = status.export as string;
  const reader = await NbdClient.connect(socket);
  const taken = info.fsg_time;
  const takenSeconds = taken.tv_sec;
  return {
    unit: status.unit,
    socket,
    size: reader.size,
    clusterSize: info.fsg_csize,
    takenSeconds,
    reader,
    async checkStillValid() {
      const now = await activeUnit(control, status.unit);
      const again = now.info?.fsg_time;
      if (again?.tv_sec !== taken.tv_sec || again.tv_usec !== taken.tv_usec || now.export !== socket) {
        throw new FssError('ENXIO', `${status.unit}: unconfigured and configured again while it was read`);
      }
    },
    close: () => reader.close(),
  };
}
