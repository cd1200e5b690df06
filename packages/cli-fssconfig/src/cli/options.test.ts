import { describe, expect, it } from 'vitest';
import { parseFssconfigArgs } from './options';

const ok = (argv: string[]) => {
  const result = parseFssconfigArgs(argv);
  if (!result.ok) throw new Error(`usage for ${argv.join(' ')}`);
  return result.options;
};

describe('parseFssconfigArgs', () => {
  it('defaults to configure', () => {
    expect(ok(['fss0', '/img', '/bak'])).toEqual({
      action: 'configure',
      verbose: 0,
      unlink: 0,
      operands: ['fss0', '/img', '/bak'],
    });
  });
  it('groups and counts flags', () => {
    expect(ok(['-cxv', 'fss0', 'a', 'b', '1', '2'])).toMatchObject({
      action: 'configure',
      verbose: 1,
      unlink: 1,
    });
    expect(ok(['-vv', '-l'])).toMatchObject({ action: 'list', verbose: 2, operands: [] });
    expect(ok(['-uv', 'fss1'])).toMatchObject({ action: 'unconfigure', verbose: 1 });
    expect(ok(['-lv', 'fss3'])).toMatchObject({ action: 'list', operands: ['fss3'] });
  });
  it('stops at the first operand and at --', () => {
    expect(ok(['-l', '--', '-x'])).toMatchObject({ action: 'list', operands: ['-x'] });
    expect(ok(['fss0', '-v', 'b'])).toMatchObject({ verbose: 0, operands: ['fss0', '-v', 'b'] });
  });
  it.each([
    [['-cl']],
    [['-c', '-u', 'fss0']],
    [['-ll']],
    [['-ux', 'fss0']],
    [['-lx']],
    [['-u']],
    [['-u', 'fss0', 'fss1']],
    [['-l', 'fss0', 'fss1']],
    [['fss0', 'a']],
    [[]],
  ])('usage for %j', (argv) => {
    expect(parseFssconfigArgs(argv)).toEqual({ ok: false });
  });
  it('complains about unknown options', () => {
    expect(parseFssconfigArgs(['-z'])).toEqual({ ok: false, message: 'unknown option -- z' });
  });
  it('takes the store-full policy (Linux additions) among the options of configure', () => {
    expect(ok(['-c', '--on-full', 'block', '--on-full-timeout=5', 'fss0', 'a', 'b'])).toMatchObject({
      action: 'configure',
      onFull: 'block',
      onFullTimeout: '5',
      operands: ['fss0', 'a', 'b'],
    });
    expect(ok(['--on-full=invalidate', '-v', 'fss0', 'a', 'b'])).toMatchObject({
      onFull: 'invalidate',
      verbose: 1,
    });
    // After the first operand it is an operand, as every option is.
    expect(ok(['fss0', '--on-full', 'block'])).toMatchObject({ operands: ['fss0', '--on-full', 'block'] });
  });
  it('refuses the store-full policy with -l and -u, and without a value', () => {
    expect(parseFssconfigArgs(['-l', '--on-full', 'block'])).toEqual({ ok: false });
    expect(parseFssconfigArgs(['-u', '--on-full=block', 'fss0'])).toEqual({ ok: false });
    expect(parseFssconfigArgs(['--on-full'])).toEqual({
      ok: false,
      message: 'option requires an argument -- on-full',
    });
    expect(parseFssconfigArgs(['--on-fullness', 'fss0', 'a', 'b'])).toEqual({
      ok: false,
      message: 'unknown option -- -',
    });
  });
});
