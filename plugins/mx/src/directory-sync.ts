import fs, { constants } from "node:fs";

/** Fsyncs a directory, so the entries made in it so far survive a crash. */
export async function syncDirectory(dir: string): Promise<void> {
  // The callback API costs the event loop less per call than FileHandle.
  const fd = await new Promise<number>((resolve, reject) =>
    fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY, (error, value) => (error ? reject(error) : resolve(value))),
  );
  try {
    await new Promise<void>((resolve, reject) => fs.fsync(fd, (error) => (error ? reject(error) : resolve())));
  } finally {
    await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
  }
}

interface SharedSync {
  current: Promise<void>;
  queued: Promise<void> | undefined;
}

const shared = new Map<string, SharedSync>();

/**
 * Fsyncs a directory for every caller that made an entry in it before the
 * call (group commit). With no fsync running, one starts at once. A caller
 * that arrives while one runs cannot rely on it, because that fsync may have
 * started before the caller's rename. So the caller waits for the next one.
 * That fsync starts when the running one ends and serves every caller that
 * arrived in between. An fsync error rejects every caller that shares it.
 */
export function syncDirectoryShared(dir: string): Promise<void> {
  const state = shared.get(dir);
  if (state === undefined) return startSync(dir);
  state.queued ??= state.current.then(
    () => startSync(dir),
    () => startSync(dir),
  );
  return state.queued;
}

function startSync(dir: string): Promise<void> {
  const state: SharedSync = { current: Promise.resolve(), queued: undefined };
  state.current = syncDirectory(dir).finally(() => {
    if (shared.get(dir) === state) shared.delete(dir);
  });
  shared.set(dir, state);
  return state.current;
}
