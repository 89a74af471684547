/**
 * A counting semaphore with a bounded wait queue. `acquire` resolves with
 * true when the caller holds a permit, which it must `release` once. It
 * resolves with false at once when every permit is taken and the queue is
 * full, and with false when the signal aborts before a permit came.
 */
export class BoundedSemaphore {
  private available: number;
  private readonly waiters: { grant: () => void }[] = [];

  constructor(
    permits: number,
    private readonly maxWaiting: number,
  ) {
    this.available = permits;
  }

  /** Number of callers waiting for a permit. */
  get waiting(): number {
    return this.waiters.length;
  }

  acquire(signal?: AbortSignal): Promise<boolean> {
    if (signal?.aborted) return Promise.resolve(false);
    if (this.available > 0) {
      this.available -= 1;
      return Promise.resolve(true);
    }
    if (this.waiters.length >= this.maxWaiting) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener("abort", abandon);
          resolve(true);
        },
      };
      const abandon = () => {
        const index = this.waiters.indexOf(waiter);
        if (index !== -1) this.waiters.splice(index, 1);
        resolve(false);
      };
      signal?.addEventListener("abort", abandon, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Hands the permit to the first waiter, or returns it to the pool. */
  release(): void {
    const next = this.waiters.shift();
    if (next) next.grant();
    else this.available += 1;
  }
}
