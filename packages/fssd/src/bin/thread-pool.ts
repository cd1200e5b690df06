/**
 * The size of libuv's thread pool for fssd. Every device and store read or write of the
 * daemon runs on that pool (fs.read/fs.write on O_DIRECT descriptors, FileHandle I/O), and
 * Node's default of 4 threads caps the requests in flight below what several NBD connections
 * with dozens of requests each ask for; nbdkit runs 16 threads by default, and so does fssd
 * (docs/performance.md has the A/B measurements).
 *
 * libuv reads UV_THREADPOOL_SIZE once, when the pool is first used, so this must run before
 * anything reads a file asynchronously. The built CommonJS program (dist/fssd.cjs) loads its
 * modules with synchronous reads and calls this first; an ES module entry (the sources run
 * through tsx) is itself read through the pool, which then already exists:
 * there only UV_THREADPOOL_SIZE in the environment counts (the bench sets it from
 * THREAD_POOL_SIZE_DEFAULT when it runs fssd from sources).
 */

/** Threads in fssd's libuv pool unless UV_THREADPOOL_SIZE says otherwise. */
export const THREAD_POOL_SIZE_DEFAULT = 16;

/** Sets UV_THREADPOOL_SIZE to the default unless `env` chose a size; returns the size in force. */
export function applyThreadPoolSize(env: NodeJS.ProcessEnv): string {
  const chosen = env['UV_THREADPOOL_SIZE'];
  if (chosen === undefined || chosen === '') env['UV_THREADPOOL_SIZE'] = String(THREAD_POOL_SIZE_DEFAULT);
  const size = env['UV_THREADPOOL_SIZE'];
  if (size === undefined || size === '') throw new Error('UV_THREADPOOL_SIZE was just set');
  return size;
}
