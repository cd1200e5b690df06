export {
  type CacheStats,
  ClusterCache,
  type ClusterCacheOptions,
  type DirtyCluster,
  type SlotState,
} from './cluster-cache';
export { SharedLoads, sharedLoadsOf } from './shared-loads';
