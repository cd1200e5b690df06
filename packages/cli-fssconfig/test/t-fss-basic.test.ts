/**
 * Acceptance: NetBSD's t_fss `basic` case (reference facts §4.1), through the CLI and the NBD
 * exports on a 2 MiB image file, with real NBD clients (qemu-io writes, nbdcopy reads):
 *
 *   1. "Original data" is written through the origin's export, origin/image.sock
 *   2. fssconfig -c fss0 ./image ./backup
 *   3. "Replacement data" is written through the origin's export
 *   4. the fss0 export still reads "Original data"; the origin reads "Replacement data"
 *
 * Cleanup as in t_fss: fssconfig -u fss0, then the daemon is stopped; nothing is left.
 * Skips loudly when qemu-io or nbdcopy is missing (scripts/install.sh installs both).
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const hasTool = async (tool: string) =>
  run('sh', ['-c', `command -v ${tool}`]).then(
    () => true,
    () => false,
  );
const missing = (
  await Promise.all(['qemu-io', 'nbdcopy'].map(async (tool) => ((await hasTool(tool)) ? '' : tool)))
)
  .filter(Boolean)
  .join(', ');
if (missing !== '') console.warn(`SKIPPED t_fss basic: ${missing} not installed (run scripts/install.sh)`);

let sandbox: Sandbox;
beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

function nbdUri(socket: string): string {
  return `nbd+unix:///?socket=${socket}`;
}

/** Writes `text` at offset 0 through an NBD export with qemu-io, in one 512-byte sector. */
async function writeSector(socket: string, text: string): Promise<void> {
  const source = sandbox.path(`sector-${text.length}`);
  const sector = Buffer.alloc(512);
  sector.write(text);
  writeFileSync(source, sector);
  await run('qemu-io', ['-f', 'raw', nbdUri(socket), '-c', `write -s ${source} 0 512`]);
}

/** Reads the whole export with nbdcopy and returns the text at offset 0, up to its newline. */
async function readText(socket: string, name: string): Promise<string> {
  const copy = sandbox.path(`${name}.copy`);
  await run('nbdcopy', [nbdUri(socket), copy]);
  const bytes = readFileSync(copy);
  return bytes.subarray(0, bytes.indexOf(0x0a)).toString('utf8');
}

describe.skipIf(missing !== '')('t_fss basic through fssconfig and the NBD exports', () => {
  it('the snapshot still reads "Original data" after "Replacement data" was written', async () => {
    const transcript: string[] = [];
    const fssconfig = async (...args: string[]) => {
      const result = await sandbox.run('fssconfig', args);
      transcript.push(`$ fssconfig ${args.join(' ')}`, `${result.stdout}${result.stderr}`.trimEnd());
      expect(result.status).toBe(0);
      return result.stdout;
    };
    writeFileSync(sandbox.path('image'), Buffer.alloc(32 * 1024 * 64)); // dd bs=32k count=64
    const added = await sandbox.run('fss', ['origin', 'add', './image']);
    expect(added.status).toBe(0);
    const origin = `${sandbox.runDir}/origin/image.sock`;
    const unit = `${sandbox.runDir}/fss0.sock`;

    await writeSector(origin, 'Original data\n');
    await fssconfig('-c', 'fss0', './image', './backup');
    const listed = await fssconfig('-lv', 'fss0');
    expect(listed).toMatch(
      /^fss0: \/.*\/image, taken \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, 32 cluster of 64K, \d+K backup, persistent\n$/,
    );
    await writeSector(origin, 'Replacement data\n');

    const testData = await readText(unit, 'fss0');
    transcript.push(`fss0 export reads: ${testData}`);
    expect(testData).toBe('Original data');
    expect(await readText(origin, 'origin')).toBe('Replacement data');
    expect(readFileSync(sandbox.path('image')).subarray(0, 16).toString()).toBe('Replacement data');

    await fssconfig('-u', 'fss0');
    expect((await sandbox.run('fss', ['origin', 'rm', 'image'])).status).toBe(0);
    await sandbox.stopDaemon();
    expect(readdirSync(sandbox.runDir)).toEqual(['fssd.log', 'origin']);
    console.log(transcript.join('\n'));
  });
});
