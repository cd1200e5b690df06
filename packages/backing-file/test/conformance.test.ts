/**
 * FileBackingStore runs the shared BackingStore conformance suite twice: on a file it
 * creates, and on a file unlinked once open (FSS_UNLINK_ON_CREATE), which must behave the
 * same through its open descriptor.
 */
import { join } from 'node:path';
import { FileBackingStore } from '@fss/backing-file';
import { testBackingStoreWithEngine } from '@fss/engine/testing';
import { tempDir } from '@fss/test-utils';

testBackingStoreWithEngine(
  'FileBackingStore',
  async () => {
    const temp = tempDir('fss-backing-file-');
    const store = await FileBackingStore.open(join(temp.path, 'store'));
    return { store, cleanup: temp.remove };
  },
  { sparse: true, writev: true },
);

testBackingStoreWithEngine(
  'FileBackingStore with unlinkOnOpen',
  async () => {
    const temp = tempDir('fss-backing-file-');
    const store = await FileBackingStore.open(join(temp.path, 'store'), { unlinkOnOpen: true });
    return { store, cleanup: temp.remove };
  },
  { sparse: true, writev: true },
);
