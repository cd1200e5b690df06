/** fssconfig's usage text: three lines on stderr, the last two lined up under the first. */
export const FSSCONFIG_USAGE = [
  'usage: fssconfig [-cxv] device path backup [cluster [size]]',
  '       fssconfig -u [-v] device',
  '       fssconfig -l [-v] [device]',
].join('\n');
