/**
 * NBD exports of units (read-only) and origins (read-write, copy-on-write through the
 * engine's Origin), one unix socket each (SPEC §5), through @fss/nbd. Each socket serves its
 * one export under the default (empty) name and under its own name, with base:allocation from
 * its device and the metadata contexts the caller adds (qemu:dirty-bitmap:fssN). Like the
 * control socket, an export serves only root and the daemon's own user (peer credentials,
 * SO_PEERCRED): a client of any other user is closed before the greeting, whatever the
 * socket's mode.
 */
import { peerRefusal } from '@fss/blockdev-linux';
import type { BlockDevice } from '@fss/core';
import { type NbdMetaContext, NbdServer } from '@fss/nbd';
import type { Log } from './log';

export interface Export {
  readonly socketPath: string;
  /** NBD clients connected now. */
  clients(): number;
  close(): Promise<void>;
}

export interface ExportOptions {
  name: string;
  readOnly: boolean;
  description: string;
  /**
   * Called with the number of clients whenever one connects or leaves (after its requests in
   * flight were answered): the daemon unconfigures FSS_UNCONFIG_ON_CLOSE units and releases
   * idle implicit origins when it drops to 0, instead of polling.
   */
  onClientsChanged?: (clients: number) => void;
  /**
   * Metadata contexts besides base:allocation (which comes from the device), asked for at
   * every LIST/SET_META_CONTEXT: the qemu:dirty-bitmap contexts (dirty-bitmaps.ts).
   */
  metaContexts?: () => readonly NbdMetaContext[];
}

export type Exporter = (socketPath: string, device: BlockDevice, options: ExportOptions) => Promise<Export>;

export function nbdExporter(log: Log): Exporter {
  return async (socketPath, device, options) => {
    const server = new NbdServer({
      exports: [
        {
          name: options.name,
          device,
          readOnly: options.readOnly,
          description: options.description,
          ...(options.metaContexts === undefined ? {} : { metaContexts: options.metaContexts }),
        },
      ],
      log: (message) => log(`${options.name}: nbd: ${message}`),
      onConnectionCountChange: options.onClientsChanged,
      admit: (socket) => peerRefusal(socket),
    });
    await server.listen({ path: socketPath, socketMode: 0o600 });
    return {
      socketPath,
      clients: () => server.connectionCount,
      close: () => server.close(),
    };
  };
}
