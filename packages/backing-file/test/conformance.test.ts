/**
 * FileBackingStore runs the shared BackingStore conformance suite twice: on a file it
 * creates, and on a file unlinked once open (FSS_UNLINK_ON_CREATE), which must behave the
 * same through its open descriptor.
 */
import { join } from 'node:path';
import { FileBackingStore } from '@fss/backing-file';
import { testBackingStore } from '@fss/core/testing';
import { makeTempDir } from './helpers';

testBackingStore(
  'FileBackingStore',
  async () => {
    const temp = await makeTempDir();
    const store = await FileBackingStore.open(join(temp.dir, 'store'));
    return { store, cleanup: temp.remove };
  },
  { sparse: true, writev: true },
);

testBackingStore(
  'FileBackingStore with unlinkOnOpen',
  async () => {
    const temp = await makeTempDir();
    const store = await FileBackingStore.open(join(temp.dir, 'store'), { unlinkOnOpen: true });
    return { store, cleanup: temp.remove };
  },
  { sparse: true, writev: true },
);
