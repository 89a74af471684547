import { expect, test } from "vitest";
import { BoundedSemaphore } from "./semaphore.js";

test("semaphore grants permits up to its count", async () => {
  const semaphore = new BoundedSemaphore(2, 0);
  expect(await semaphore.acquire()).toBe(true);
  expect(await semaphore.acquire()).toBe(true);
  expect(await semaphore.acquire()).toBe(false);
});

test("semaphore hands a released permit to the first waiter", async () => {
  const semaphore = new BoundedSemaphore(1, 2);
  await semaphore.acquire();
  const order: string[] = [];
  const first = semaphore.acquire().then((granted) => order.push(`first ${granted}`));
  const second = semaphore.acquire().then((granted) => order.push(`second ${granted}`));
  expect(semaphore.waiting).toBe(2);
  expect(await semaphore.acquire()).toBe(false);
  semaphore.release();
  await first;
  expect(order).toEqual(["first true"]);
  semaphore.release();
  await second;
  expect(order).toEqual(["first true", "second true"]);
});

test("semaphore drops a waiter whose signal aborts", async () => {
  const semaphore = new BoundedSemaphore(1, 1);
  await semaphore.acquire();
  const controller = new AbortController();
  const abandoned = semaphore.acquire(controller.signal);
  controller.abort();
  expect(await abandoned).toBe(false);
  expect(semaphore.waiting).toBe(0);

  // The place in the queue is free again, and the permit is not lost.
  const next = semaphore.acquire();
  semaphore.release();
  expect(await next).toBe(true);
  semaphore.release();
  expect(await semaphore.acquire()).toBe(true);
});

test("semaphore refuses an already aborted signal", async () => {
  const semaphore = new BoundedSemaphore(1, 1);
  const controller = new AbortController();
  controller.abort();
  expect(await semaphore.acquire(controller.signal)).toBe(false);
  expect(await semaphore.acquire()).toBe(true);
});
