/**
 * The fssd program. First the libuv thread pool's size (thread-pool.ts says why it must come
 * before anything else), then the daemon: its modules are loaded by a dynamic import, so
 * nothing of them runs before the size is set, whatever the bundler does with static imports.
 */
import { applyThreadPoolSize } from './thread-pool';

applyThreadPoolSize(process.env);
void import('../command').then(({ runFssd }) => runFssd(process.argv.slice(2)));
