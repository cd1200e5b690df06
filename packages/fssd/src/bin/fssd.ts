import { runFssd } from '../command';

await runFssd(process.argv.slice(2));
