/**
 * @fss/fssd: the daemon that owns origins and snapshot units, as NetBSD's kernel owns fss(4)
 * units: it claims each origin, takes snapshots onto their backing stores, exports origins
 * and units over NBD, and answers the control protocol of @fss/control. The `fssd` program
 * runs it; `Fssd` embeds it in another Node program (tests, or a supervisor of your own).
 */
export { type Backends, linuxBackends } from './backends';
export { type FssdArgs, parseFssdArgs, runFssd } from './command';
export { type Export, type Exporter, nbdExporter } from './exports';
export { Fssd, type FssdOptions, prepareRunDir } from './fssd';
export { createLog, type Log } from './log';
