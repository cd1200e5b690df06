/**
 * Everything the bench starts or creates (servers, the daemon, loop devices, temporary
 * files) registers its undo here the moment it exists, so one `runAll()` in run.ts's finally
 * block, or on SIGINT/SIGTERM, releases it in every outcome, newest first. An undo that fails
 * is reported and the rest still run: a leaked loop device must not keep a server alive.
 */

export type Undo = () => Promise<void> | void;

export class Cleanup {
  private readonly undos: { what: string; undo: Undo }[] = [];
  private running: Promise<void> | undefined;

  /** Registers `undo`; the returned function runs it now (once) and unregisters it. */
  defer(what: string, undo: Undo): () => Promise<void> {
    const entry = { what, undo };
    this.undos.push(entry);
    return async () => {
      const index = this.undos.indexOf(entry);
      if (index < 0) return;
      this.undos.splice(index, 1);
      await undo();
    };
  }

  /** Runs every registered undo, newest first; safe to call more than once. */
  runAll(): Promise<void> {
    this.running ??= this.drain();
    return this.running;
  }

  private async drain(): Promise<void> {
    while (this.undos.length > 0) {
      const { what, undo } = this.undos.pop()!;
      try {
        await undo();
      } catch (error) {
        process.stderr.write(`bench: cleanup: ${what}: ${String(error)}\n`);
      }
    }
  }
}
