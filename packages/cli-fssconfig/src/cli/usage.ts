import { usageText } from '@fss/manual';
import { FSSCONFIG_MANUAL } from '../manual/fssconfig';

/** fssconfig's usage text: NetBSD's three lines on stderr, the last two lined up under the first. */
export const FSSCONFIG_USAGE = usageText(FSSCONFIG_MANUAL);
