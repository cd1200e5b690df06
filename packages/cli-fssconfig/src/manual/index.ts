/** The manuals of this package's programs, in the order their man pages are written. */
import { FSS_MANUAL } from './fss';
import { FSSCK_MANUAL } from './fssck';
import { FSSCONFIG_MANUAL } from './fssconfig';

export { FSS_MANUAL, FSSCK_MANUAL, FSSCONFIG_MANUAL };
export const MANUALS = [FSSCONFIG_MANUAL, FSS_MANUAL, FSSCK_MANUAL] as const;
