/**
 * Names of units and origins, validated strictly where they enter the system (the CLI and
 * the daemon both check, so a typed-client caller gets the same answers as the CLI).
 *
 * Units are `fss0` … `fss(N-1)`, written as `fssN`, `/dev/fssN` or `/dev/rfssN` (what
 * NetBSD's opendisk(3) would accept for a unit), with no leading zeros and no sign.
 * Origins are named by the user or after their path: 1–64 characters of `[A-Za-z0-9._-]`,
 * not starting with `-` or `.` (no option look-alikes, no `.`/`..`, no hidden files in the
 * run directory).
 */
export const UNIT_COUNT_DEFAULT = 16;
/** Unit numbers are small: they name sockets and /dev nodes. */
export const UNIT_COUNT_MAX = 256;
export const ORIGIN_NAME_BYTES_MAX = 64;

const UNIT_PATTERN = /^(?:\/dev\/r?)?fss(0|[1-9][0-9]{0,3})$/;
const ORIGIN_NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;

/** The unit number a device argument names, or undefined when it names no fss unit. */
export function parseUnitName(device: string): number | undefined {
  const match = UNIT_PATTERN.exec(device);
  if (match === null) return undefined;
  return Number(match[1]);
}

export function unitName(unit: number): string {
  return `fss${unit}`;
}

export function isOriginName(name: string): boolean {
  return ORIGIN_NAME_PATTERN.test(name);
}

/**
 * A default origin name from a path: its basename with every character outside the allowed
 * set replaced by `_`, shortened to the limit, then made unique with `-2`, `-3`, ….
 */
export function defaultOriginName(path: string, taken: (name: string) => boolean): string {
  const base = path.replace(/\/+$/, '').split('/').pop() ?? '';
  let name = base.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[.-]+/, '');
  if (name === '') name = 'origin';
  name = name.slice(0, ORIGIN_NAME_BYTES_MAX);
  if (!taken(name)) return name;
  for (let suffix = 2; ; suffix += 1) {
    const tail = `-${suffix}`;
    const candidate = name.slice(0, ORIGIN_NAME_BYTES_MAX - tail.length) + tail;
    if (!taken(candidate)) return candidate;
  }
}
