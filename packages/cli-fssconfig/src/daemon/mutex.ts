/**
 * One-at-a-time execution of the daemon's state changes (configure, unconfigure, origin
 * add/remove, the close-time sweeper). NetBSD serializes snapshot creation globally the same
 * way (fss_creating); here it also makes "is this backup in use?" checks race-free.
 */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
