/**
 * `fss dump --format qcow2`: qemu-img does the encoding, reading the unit's export itself
 * (`qemu-img convert -p -f raw -O qcow2 nbd+unix:///?socket=SOCK TEMP`); fss only reports the
 * progress qemu-img prints (`    (12.50/100%)` on stdout) and renames TEMP over FILE once
 * qemu-img succeeded and the unit is still the same valid snapshot. qemu-img is looked up as
 * FSS_QEMU_IMG, else `qemu-img` on PATH; missing, it is ENOENT with what to install.
 */
import { spawn } from 'node:child_process';
import { renameSync, unlinkSync } from 'node:fs';
import { FssError } from '@fss/core';
import type { Progress } from './progress';
import type { SnapshotSource } from './snapshot-source';
import { partialPath } from './targets';

export interface Qcow2Job {
  readonly source: SnapshotSource;
  readonly path: string;
  readonly progress: Progress;
  readonly signal: AbortSignal;
  readonly qemuImg?: string;
}

export async function dumpQcow2(job: Qcow2Job): Promise<void> {
  const temporary = partialPath(job.path);
  const uri = `nbd+unix:///?socket=${job.source.socket}`;
  try {
    job.progress.begin('copy', job.source.size);
    await runQemuImg(job, ['convert', '-p', '-f', 'raw', '-O', 'qcow2', uri, temporary]);
    job.progress.end();
    await job.source.checkStillValid();
    renameSync(temporary, job.path);
  } catch (error) {
    job.progress.stop();
    try {
      unlinkSync(temporary);
    } catch {
      // qemu-img may not have created it.
    }
    throw error;
  }
}

function runQemuImg(job: Qcow2Job, args: string[]): Promise<void> {
  const program = job.qemuImg ?? (process.env['FSS_QEMU_IMG'] || 'qemu-img');
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], signal: job.signal });
    let reported = 0;
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      for (const match of text.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)) {
        const bytes = Math.floor((Number(match[1]) / 100) * job.source.size);
        if (bytes > reported) job.progress.advance(bytes - reported);
        reported = Math.max(reported, bytes);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') {
        reject(
          new FssError(
            'ENOENT',
            `${program} not found: --format qcow2 needs qemu-img (Debian: apt-get install qemu-utils)`,
          ),
        );
      } else if (error.name === 'AbortError') {
        reject(new FssError('ECANCELED', 'qemu-img was stopped'));
      } else reject(new FssError('EIO', `${program}: ${error.message}`));
    });
    child.on('close', (status, signal) => {
      if (status === 0) resolve();
      else {
        const why = stderr.trim().split('\n').pop() ?? '';
        reject(
          new FssError(
            'EIO',
            `qemu-img convert failed (${signal ?? `exit ${status}`})${why === '' ? '' : `: ${why}`}`,
          ),
        );
      }
    });
  });
}
