#!/usr/bin/env node
// The README's demo: snapshot a disk image with the fss library while writes continue, and
// show that the snapshot still reads the image as it was. Runs on the built packages.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openFileBackingStore } from '@fss/backing-file';
import { openBlockDevice } from '@fss/blockdev-linux';
import { Origin } from '@fss/core';

const MiB = 1024 * 1024;
const say = (line) => console.log(`demo: ${line}`);
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

const dir = await mkdtemp(join(tmpdir(), 'fss-demo-'));
try {
  const imagePath = join(dir, 'disk.img');
  const image = randomBytes(64 * MiB);
  Buffer.from('Original data\n').copy(image, 4096);
  await writeFile(imagePath, image);
  say(`made a 64 MiB disk image ${imagePath} (sha256 ${sha256(image)}), "Original data" at offset 4096`);

  const device = await openBlockDevice(imagePath);
  const origin = new Origin(device, { name: imagePath });
  say(`opened it as the origin: exclusive lock taken, ${device.ioMode} I/O`);

  const backupPath = join(dir, 'backup');
  const store = await openFileBackingStore(backupPath, { create: 'new', sizeBytes: device.size });
  const snapshot = await origin.createSnapshot(store, { name: 'fss0', mount: imagePath });
  const info = snapshot.info();
  say(
    `fss0: snapshot taken: ${info.fsg_mount_size} clusters of ${info.fsg_csize / 1024}K, ` +
      `backing store ${backupPath} (sparse, 0600)`,
  );

  await origin.write(Buffer.from('Replacement data\n'), 4096);
  say('wrote "Replacement data" through the origin at offset 4096');
  const total = 32;
  for (let i = 0; i < total; i++) {
    const offset = Math.floor(Math.random() * (device.size - MiB));
    await origin.write(randomBytes(MiB), offset - (offset % 512));
    if ((i + 1) % 8 === 0) say(`wrote ${i + 1}/${total} MiB of random data through the origin`);
  }

  const view = new Uint8Array(17);
  await origin.read(view, 4096);
  say(`origin now reads:   ${JSON.stringify(Buffer.from(view).toString())}`);
  const old = new Uint8Array(14);
  await snapshot.read(old, 4096);
  say(`snapshot fss0 reads: ${JSON.stringify(Buffer.from(old).toString())}`);

  const whole = Buffer.alloc(device.size);
  await snapshot.read(whole, 0);
  const same = sha256(whole) === sha256(image);
  say(
    `whole snapshot sha256 ${sha256(whole)}: ${same ? 'identical to the image at snapshot time' : 'DIFFERS'}`,
  );
  const used = snapshot.info().fsg_bs_size * info.fsg_csize;
  await snapshot.close();
  await origin.close();
  const backup = await stat(backupPath);
  say(
    `backing store: ${(used / MiB).toFixed(1)} MiB in use, ${((backup.blocks * 512) / MiB).toFixed(1)} MiB ` +
      `allocated of ${(backup.size / MiB).toFixed(0)} MiB apparent`,
  );
  const current = await readFile(imagePath);
  say(`the image itself changed (sha256 ${sha256(current)}); fss0 unconfigured, lock released`);
  if (!same) process.exitCode = 1;
} finally {
  await rm(dir, { recursive: true, force: true });
}
