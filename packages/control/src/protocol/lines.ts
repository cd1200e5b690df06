/**
 * Splits a byte stream into `\n`-terminated lines with a hard limit on line length, so a peer
 * that never sends a newline cannot make us buffer without bound. Used by both ends of the
 * control socket.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxBytes: number) {}

  /**
   * Feeds a chunk; returns the complete lines it finished (without `\n`, trailing `\r`
   * kept). Returns `overflow: true` once a line grows past the limit; the caller should
   * answer EINVAL and close, since the rest of that line cannot be resynchronized cheaply.
   */
  push(chunk: Buffer): { lines: string[]; overflow: boolean } {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      if (newline < 0) break;
      const piece = chunk.subarray(start, newline);
      if (this.pendingBytes + piece.length > this.maxBytes) return { lines, overflow: true };
      this.pending.push(piece);
      lines.push(Buffer.concat(this.pending).toString('utf8'));
      this.pending = [];
      this.pendingBytes = 0;
      start = newline + 1;
    }
    const rest = chunk.subarray(start);
    if (this.pendingBytes + rest.length > this.maxBytes) return { lines, overflow: true };
    if (rest.length > 0) {
      this.pending.push(Buffer.from(rest));
      this.pendingBytes += rest.length;
    }
    return { lines, overflow: false };
  }
}
