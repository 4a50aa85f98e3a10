// A fixed-capacity buffer that keeps the newest items: pushing onto a full buffer drops the oldest.
// Backed by mnemonist's CircularBuffer (maintained, widely used, typed); this wrapper pins it to
// plain arrays and gives the metrics tiers the three operations they need.
import { CircularBuffer } from "mnemonist";

export class RingBuffer<T> {
  private readonly items: CircularBuffer<T>;

  constructor(readonly capacity: number) {
    this.items = new CircularBuffer<T>(Array, capacity);
  }

  /** Appends `item`, dropping the oldest one when the buffer is full. */
  push(item: T): void {
    this.items.push(item);
  }

  /** The items, oldest first. */
  toArray(): T[] {
    return this.items.toArray() as T[];
  }

  get size(): number {
    return this.items.size;
  }

  clear(): void {
    this.items.clear();
  }
}
