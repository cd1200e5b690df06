/**
 * One process 'exit' listener for every served file and attached loop device, instead of one
 * listener each (a daemon with dozens of units would trip Node's listener-leak warning).
 * Hooks run in the order they were added, which attach.ts relies on: the FUSE connection is
 * aborted before the loop device over it is detached. A hook must be synchronous and must not
 * wait for anything (the event loop is gone); one that throws does not stop the others.
 */
const hooks = new Set<() => void>();
let installed = false;

function runHooks(): void {
  for (const hook of [...hooks]) {
    try {
      hook();
    } catch {
      // The process is exiting; the next hook still gets its chance.
    }
  }
}

/** Adds `hook` to run if the process exits; returns the function that removes it again. */
export function onProcessExit(hook: () => void): () => void {
  if (!installed) {
    process.on('exit', runHooks);
    installed = true;
  }
  hooks.add(hook);
  return () => {
    hooks.delete(hook);
  };
}
