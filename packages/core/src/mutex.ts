/**
 * A FIFO async mutex: `await lock.run(() => work())` runs one `work` at a time, in call order,
 * whether earlier ones resolved or rejected. The engine uses it for the indirect table and
 * header writes; the daemon for its state changes.
 */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(work, work);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
