import { fssck } from '../commands/fssck';
import { processIo } from '../commands/io';

process.exitCode = await fssck(process.argv.slice(2), processIo());
