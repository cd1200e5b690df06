export { NbdClient, type NbdClientOptions, type NbdExportInfo } from './nbd-client';
export {
  type ByteRange,
  type RangeSink,
  type RangeSource,
  READ_IN_FLIGHT_DEFAULT,
  READ_REQUEST_BYTES_DEFAULT,
  type ReadRangesOptions,
  readRanges,
  splitRanges,
} from './read-ranges';
