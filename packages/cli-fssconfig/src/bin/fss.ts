import { fss } from '../commands/fss';
import { processIo } from '../commands/io';

process.exitCode = await fss(process.argv.slice(2), processIo());
