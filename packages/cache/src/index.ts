export {
  type CacheStats,
  ClusterCache,
  type ClusterCacheOptions,
  type CopiedSet,
  type DirtyCluster,
  type SlotState,
} from './cluster-cache';
