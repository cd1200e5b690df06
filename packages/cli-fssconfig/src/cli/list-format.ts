/**
 * The lines `fssconfig -l` prints, exactly as NetBSD's fssconfig does:
 *
 *   fss0: not in use
 *   fss0: /srv/image
 *   fss0: /srv/image, taken 2026-11-24 09:30:00, 32 cluster of 64K, 64K backup
 *
 * `-v` adds the time (local time, strftime "%F %T"), then ", unconfig on close" when that
 * flag is set, then either ", file system internal" (a persistent snapshot: cluster size 0)
 * or the cluster count, the humanized cluster size and the humanized backing-store use
 * (clusters in use × cluster size). "cluster" stays singular, as in NetBSD.
 *
 * A Linux addition ends a `-v` line of a unit that survives fssd's restart (fssd's
 * persistent units): ", persistent", or ", persistent (power)" when it survives power loss.
 */
import { FSS_UNCONFIG_ON_CLOSE, type FssGet } from '@fss/core';
import { humanizeNumber } from './humanize';

export function formatNotInUse(name: string): string {
  return `${name}: not in use`;
}

export function formatListLine(
  name: string,
  get: FssGet,
  flags: number,
  verbose: boolean,
  persistence?: { persistent?: boolean | undefined; durability?: string | undefined },
): string {
  if (!verbose) return `${name}: ${get.fsg_mount}`;
  let line = `${name}: ${get.fsg_mount}, taken ${formatLocalTime(get.fsg_time.tv_sec)}`;
  if ((flags & FSS_UNCONFIG_ON_CLOSE) !== 0) line += ', unconfig on close';
  line += `, ${formatClusterUse(get)}`;
  if (persistence?.persistent === true) {
    line += persistence.durability === 'power' ? ', persistent (power)' : ', persistent';
  }
  return line;
}

/**
 * The end of a `-v` line (also in `fss status`): "N cluster of SIZE, USE backup", or "file
 * system internal" for a persistent snapshot (cluster size 0).
 */
export function formatClusterUse(get: FssGet): string {
  if (get.fsg_csize === 0) return 'file system internal';
  const backupBytes = BigInt(get.fsg_bs_size) * BigInt(get.fsg_csize);
  return `${get.fsg_mount_size} cluster of ${humanizeNumber(get.fsg_csize)}, ${humanizeNumber(backupBytes)} backup`;
}

/** strftime("%F %T", localtime(seconds)): YYYY-MM-DD HH:MM:SS in the local time zone. */
export function formatLocalTime(epochSeconds: number): string {
  const date = new Date(epochSeconds * 1000);
  const two = (value: number) => String(value).padStart(2, '0');
  const year = String(date.getFullYear()).padStart(4, '0');
  return `${year}-${two(date.getMonth() + 1)}-${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}
