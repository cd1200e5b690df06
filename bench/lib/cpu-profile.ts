/**
 * Reading a V8 `.cpuprofile` (what `node --cpu-prof` writes) into the figures docs/performance.md
 * quotes: each function's self share of the samples (where the CPU was), its total share
 * (where it was, or something it called; a function counted once per sample even when it
 * recurses), and self shares summed per package (`@fss/nbd`, `node:internal`, GC, idle).
 *
 * Format: `nodes` is the call tree (id, callFrame {functionName, url, lineNumber}, children);
 * `samples` holds, per sample, the id of the node on top of the stack; `timeDeltas` the
 * microseconds since the previous sample. Shares weight samples by their time delta.
 */

export interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

export interface FunctionShare {
  name: string;
  where: string;
  selfShare: number;
  totalShare: number;
}

export interface ProfileSummary {
  durationMs: number;
  /** Share of the samples that were not idle. */
  busyShare: number;
  functions: FunctionShare[];
  packages: { name: string; selfShare: number }[];
}

/** The package or runtime part a script URL belongs to. */
export function packageOf(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)') return 'V8/native (program)';
    return 'native';
  }
  const fss = /\/packages\/([^/]+)\//.exec(url);
  if (fss !== null) return `@fss/${fss[1]}`;
  if (url.startsWith('node:')) return 'node:internal';
  const dependency = /\/node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (dependency !== null) return dependency[1]!;
  return 'other';
}

function shortWhere(frame: CallFrame): string {
  if (frame.url === '') return '';
  const fss = /\/packages\/(.+)$/.exec(frame.url);
  const file = fss !== null ? fss[1]! : frame.url.replace(/^.*\/node_modules\//, '');
  // tsx's output keeps a module on one line, so a line number only means something above 1.
  return frame.lineNumber > 0 ? `${file}:${frame.lineNumber + 1}` : file;
}

/**
 * A time window in the profile's clock: microseconds of CLOCK_MONOTONIC, the clock of V8's
 * TimeTicks and of `process.hrtime`, so another process can say when its passes ran.
 */
export interface ProfileWindow {
  fromUs: number;
  toUs: number;
}

/** Per sample: whether it falls in `window` (every sample when there is none). */
function inWindow(profile: CpuProfile, window: ProfileWindow | undefined): boolean[] {
  let atUs = profile.startTime;
  return profile.timeDeltas.map((deltaUs) => {
    atUs += deltaUs;
    return window === undefined || (atUs >= window.fromUs && atUs <= window.toUs);
  });
}

export function summariseProfile(profile: CpuProfile, top = 30, window?: ProfileWindow): ProfileSummary {
  const included = inWindow(profile, window);
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const keyOf = (id: number): string => {
    const frame = byId.get(id)!.callFrame;
    return `${frame.functionName || '(anonymous)'}\u0000${shortWhere(frame)}`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const packages = new Map<string, number>();
  let allUs = 0;
  let idleUs = 0;
  profile.samples.forEach((id, index) => {
    if (!included[index]) return;
    const weightUs = profile.timeDeltas[index] ?? 0;
    allUs += weightUs;
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') idleUs += weightUs;
    const key = keyOf(id);
    self.set(key, (self.get(key) ?? 0) + weightUs);
    const pkg = packageOf(frame.url, frame.functionName);
    packages.set(pkg, (packages.get(pkg) ?? 0) + weightUs);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
      const stackKey = keyOf(at);
      if (seen.has(stackKey)) continue;
      seen.add(stackKey);
      total.set(stackKey, (total.get(stackKey) ?? 0) + weightUs);
    }
  });
  const busyUs = allUs - idleUs;
  const share = (us: number) => (busyUs > 0 ? us / busyUs : 0);
  const functions = [...self.entries()]
    .filter(([key]) => !key.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, us]) => {
      const [name, where] = key.split('\u0000') as [string, string];
      return { name, where, selfShare: share(us), totalShare: share(total.get(key) ?? 0) };
    });
  return {
    durationMs:
      window === undefined
        ? (profile.endTime - profile.startTime) / 1000
        : (window.toUs - window.fromUs) / 1000,
    busyShare: allUs > 0 ? busyUs / allUs : 0,
    functions,
    packages: [...packages.entries()]
      .filter(([name]) => name !== 'idle')
      .sort((a, b) => b[1] - a[1])
      .map(([name, us]) => ({ name, selfShare: share(us) })),
  };
}

/** Total shares of chosen functions (by name), e.g. every `write` frame under the NBD server. */
export function totalShareOf(profile: CpuProfile, matches: (name: string, url: string) => boolean): number {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  let matchedUs = 0;
  let busyUs = 0;
  profile.samples.forEach((id, index) => {
    const weightUs = profile.timeDeltas[index] ?? 0;
    if (byId.get(id)!.callFrame.functionName === '(idle)') return;
    busyUs += weightUs;
    for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
      const frame = byId.get(at)!.callFrame;
      if (matches(frame.functionName, frame.url)) {
        matchedUs += weightUs;
        return;
      }
    }
  });
  return busyUs > 0 ? matchedUs / busyUs : 0;
}
