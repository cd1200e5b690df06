// The loop-device, mount and pattern fixtures live in the shared private package.
export * from '@fss/test-utils';
