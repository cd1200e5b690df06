import { fssconfig } from '../commands/fssconfig';
import { processIo } from '../commands/io';

process.exitCode = await fssconfig(process.argv.slice(2), processIo());
