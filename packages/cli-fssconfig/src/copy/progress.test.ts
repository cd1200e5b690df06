import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createProgress, formatSeconds, type ProgressLine } from './progress';

function capture(): { stream: NodeJS.WritableStream; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk, _encoding, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

describe('progress', () => {
  it('json: a first line at 0, lines no more often than the interval, a final done line per phase', () => {
    let now = 0;
    const out = capture();
    const progress = createProgress({
      mode: 'json',
      op: 'dump',
      unit: 'fss0',
      stream: out.stream,
      isTTY: false,
      intervalMs: 1000,
      now: () => now,
    });
    progress.begin('copy', 4000);
    for (let step = 0; step < 4; step += 1) {
      now += 600;
      progress.advance(1000);
    }
    progress.end();
    const lines = out
      .text()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as ProgressLine);
    expect(lines.map((line) => line.bytes)).toEqual([0, 2000, 4000]); // 4000 only once: the final line
    expect(lines[0]).toEqual({
      op: 'dump',
      unit: 'fss0',
      phase: 'copy',
      bytes: 0,
      totalBytes: 4000,
      bytesPerSecond: 0,
      secondsLeft: null,
      done: false,
    });
    expect(lines[1]).toMatchObject({ bytesPerSecond: 1667, secondsLeft: 2, done: false });
    expect(lines.at(-1)).toMatchObject({ bytes: 4000, secondsLeft: 0, done: true });
  });

  it('auto is the bar on a terminal and JSON lines elsewhere; none prints nothing', () => {
    const piped = capture();
    createProgress({ mode: 'auto', op: 'dump', unit: 'fss0', stream: piped.stream, isTTY: false }).begin(
      'copy',
      1,
    );
    expect(piped.text()).toMatch(/^\{"op":"dump"/);
    const terminal = capture();
    const bar = createProgress({
      mode: 'auto',
      op: 'dump',
      unit: 'fss0',
      stream: terminal.stream,
      isTTY: true,
    });
    bar.begin('copy', 1024 * 1024);
    bar.advance(512 * 1024);
    bar.end();
    expect(terminal.text()).toContain('fss0 copy [');
    expect(terminal.text()).toContain('100% 1M/1M');
    expect(terminal.text()).toContain('ETA --');
    const silent = capture();
    createProgress({ mode: 'none', op: 'dump', unit: 'fss0', stream: silent.stream, isTTY: true }).begin(
      'copy',
      1,
    );
    expect(silent.text()).toBe('');
  });

  it('formats the ETA', () => {
    expect([formatSeconds(null), formatSeconds(42), formatSeconds(185), formatSeconds(3720)]).toEqual([
      '--',
      '42s',
      '3m05s',
      '1h02m',
    ]);
  });
});
