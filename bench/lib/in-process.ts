/**
 * fss as a library, in the bench's own process: the README's API (`@fss/core`'s Origin over
 * `@fss/blockdev-linux`'s openBlockDevice, snapshots onto `@fss/backing-file` stores). This
 * isolates the engine's cost from the NBD server's and from a second process. The device is
 * opened exactly as fssd opens an origin (exclusive claim, O_DIRECT where the device allows).
 */
import { openFileBackingStore } from '@fss/backing-file';
import { openBlockDevice } from '@fss/blockdev-linux';
import { type Durability, Origin, type Snapshot } from '@fss/engine';
import type { Sandbox } from './sandbox';

export class InProcessOrigin {
  private constructor(
    readonly origin: Origin,
    readonly ioMode: string,
    private readonly sandbox: Sandbox,
  ) {}

  static async open(path: string, sandbox: Sandbox): Promise<InProcessOrigin> {
    const device = await openBlockDevice(path, { exclusive: true });
    return new InProcessOrigin(
      new Origin(device, { name: path, logger: (line) => process.stderr.write(`bench: ${line}\n`) }),
      device.ioMode,
      sandbox,
    );
  }

  /**
   * Takes a snapshot onto a fresh store file `name`; close it with closeSnapshot.
   * `clusterBytes` 0 is the default size; `cacheSlotsMin` raises fss's 32/8/4 slots.
   */
  async snapshot(
    name: string,
    options: {
      clusterBytes?: number;
      cacheSlotsMin?: number;
      cacheBytes?: number;
      /** 'process' or 'power': a persistent snapshot (the commit protocol), as fssd makes on a named file. */
      durability?: Durability;
    } = {},
  ): Promise<Snapshot> {
    const storePath = this.sandbox.path(`${name}.store`);
    this.sandbox.forget(storePath);
    const store = await openFileBackingStore(storePath, { create: 'new' });
    this.sandbox.track(storePath);
    return this.origin.createSnapshot(store, {
      name,
      clusterSize: options.clusterBytes ?? 0,
      ...(options.cacheSlotsMin === undefined ? {} : { cacheSlotsMin: options.cacheSlotsMin }),
      ...(options.cacheBytes === undefined ? {} : { cacheBytes: options.cacheBytes }),
      // A file just created reads as zero: fssd passes the same for its backup files.
      ...(options.durability === undefined ? {} : { durability: options.durability, tableZeroed: true }),
    });
  }

  /** Closes the snapshot (and its store) and removes the store file. */
  async closeSnapshot(snapshot: Snapshot, name: string): Promise<void> {
    await snapshot.close();
    this.sandbox.forget(this.sandbox.path(`${name}.store`));
  }

  close(): Promise<void> {
    return this.origin.close();
  }
}
