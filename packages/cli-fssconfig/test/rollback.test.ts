/**
 * `fss rollback` on a terminal: one progress line redrawn (`\r`, erase line), then a final
 * line; and its refusals. The command runs in-process (a fake terminal for its output)
 * against a real daemon started by fssconfig; the data path itself is checked against
 * models in fssd's test/rollback.test.ts.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FssClient } from '@fss/control';
import { NbdClient, pattern, Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fss } from '../src/commands/fss';

const MiB = 1024 * 1024;
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

describe('fss rollback on a terminal', () => {
  it('redraws one progress line, ends with the outcome; refuses units it cannot roll back', async () => {
    writeFileSync(sandbox.path('image'), pattern(MiB, 1));
    const configured = await sandbox.run('fssconfig', [
      '-c',
      'fss0',
      sandbox.path('image'),
      sandbox.path('b0'),
    ]);
    expect(configured.status, configured.stderr).toBe(0);
    const origin = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
    await origin.write(0, pattern(65536 * 3, 2));
    await origin.flush();
    origin.disconnect();
    const client = await FssClient.connect({ runDir: sandbox.runDir, autostart: false });
    while ((await client.originList()).some((each) => each.exportClients > 0)) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    client.close();
    let written = '';
    const lines: string[] = [];
    const errors: string[] = [];
    const io = {
      out: (line: string) => lines.push(line),
      err: (line: string) => errors.push(line),
      isTTY: true,
      write: (text: string) => {
        written += text;
      },
    };
    const connect = { runDir: sandbox.runDir, autostart: false };
    expect(await fss(['rollback', 'fss0'], io, connect), errors.join('\n')).toBe(0);
    // Every redraw returns to the line's start and erases it (CR, ESC [ K).
    const redraws = written.split('\r\u001b[K');
    expect(redraws[0]).toBe('');
    for (const redraw of redraws.slice(1, -1)) expect(redraw).toMatch(/^fss0: rolling back: \d+% \([^)]*\)$/);
    expect(written).toMatch(/rolling back: 100% \(192K of 192K\)\n$/);
    expect(lines).toEqual(['fss0: rolled back onto its origin; unconfigured']);
    expect(Buffer.compare(readFileSync(sandbox.path('image')), pattern(MiB, 1))).toBe(0);
    const refusals: Array<[string[], string]> = [
      [
        ['rollback', 'fss0'],
        'fss: rollback fss0: No such device or address|fss: rollback fss0: fss0 is not configured',
      ],
      [
        ['rollback', 'vnd0'],
        'fss: rollback vnd0: Invalid argument|fss: rollback vnd0: not an fss unit name: "vnd0"',
      ],
    ];
    for (const [args, message] of refusals) {
      errors.length = 0;
      expect(await fss(args, io, connect)).toBe(1);
      expect(errors.join('|')).toBe(message);
    }
    for (const args of [['rollback'], ['rollback', 'fss0', 'fss1'], ['rollback', '--json']]) {
      errors.length = 0;
      expect(await fss(args, io, connect), args.join(' ')).toBe(1);
      expect(errors[0]).toMatch(/^usage: fss /);
    }
  }, 60_000);
});
