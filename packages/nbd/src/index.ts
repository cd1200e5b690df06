export { type BlockStatusChunk, clipExtents } from './block-status';
export * from './client/index';
export { NBD_ERRNO_OF, nbdErrnoOf } from './errors';
export { describeExport, type NbdExport, type NbdExportOptions } from './export';
export {
  baseAllocationContext,
  type ContextMatch,
  matchContexts,
  type NbdExtent,
  type NbdMetaContext,
  type SelectedContext,
} from './meta-context';
export * from './protocol';
export { type NbdListenAddress, NbdServer, type NbdServerOptions } from './server';
export {
  loadPskCredentials,
  loadX509Credentials,
  type NbdTlsCredentials,
  parsePskFile,
  X509_FILES,
} from './tls-credentials';
