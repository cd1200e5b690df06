import { describe, expect, it } from 'vitest';
import { CopiedBitmap } from './bitmap';
import { SeededRandom } from './random';

describe('CopiedBitmap', () => {
  for (const size of [1, 31, 32, 33, 64, 100, 1000]) {
    it(`answers has/nextSet/nextClear/allSet like a plain array (size ${size})`, () => {
      const random = new SeededRandom(size);
      const bitmap = new CopiedBitmap(size);
      const model = new Array<boolean>(size).fill(false);
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < size; i++) {
          if (random.next() < 0.3) {
            bitmap.add(i);
            model[i] = true;
          }
        }
        for (let from = 0; from < size; from += 7) {
          for (const end of [from, Math.min(size, from + 1), Math.min(size, from + 40), size]) {
            const slice = model.slice(from, end);
            const set = slice.indexOf(true);
            const clear = slice.indexOf(false);
            expect(bitmap.nextSet(from, end)).toBe(set === -1 ? -1 : from + set);
            expect(bitmap.nextClear(from, end)).toBe(clear === -1 ? -1 : from + clear);
            expect(bitmap.allSet(from, end)).toBe(clear === -1);
          }
        }
        expect(bitmap.count).toBe(model.filter(Boolean).length);
        for (let i = 0; i < size; i++) expect(bitmap.has(i)).toBe(model[i]);
      }
    });
  }

  it('counts a bit once however often it is set', () => {
    const bitmap = new CopiedBitmap(10);
    bitmap.add(3);
    bitmap.add(3);
    expect(bitmap.count).toBe(1);
  });

  it('asserts on out-of-range bits', () => {
    const bitmap = new CopiedBitmap(10);
    expect(() => bitmap.add(10)).toThrow(/out of range/);
    expect(() => bitmap.has(-1)).toThrow(/out of range/);
    expect(() => bitmap.nextSet(0, 11)).toThrow(/out of bounds/);
  });
});
