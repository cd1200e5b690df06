import { runFssd } from '../commands/fssd';

await runFssd(process.argv.slice(2));
