import { useCallback, useEffect, useRef, useState } from "react";

export type Async<T> = {
  data: T | undefined;
  error: Error | undefined;
  loading: boolean;
  reload: () => void;
};

/** Load data; `reload()` fetches again. `pollMs` keeps it fresh while `poll(data)` holds. */
export function useAsync<T>(
  load: () => Promise<T>,
  deps: unknown[],
  options: { pollMs?: number; poll?: (data: T) => boolean } = {},
): Async<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<Error>();
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const reload = useCallback(() => setTick((n) => n + 1), []);

  useEffect(() => {
    let live = true;
    setLoading(true);
    loadRef
      .current()
      .then((value) => {
        if (!live) return;
        setData(value);
        setError(undefined);
      })
      .catch((err: unknown) => live && setError(err instanceof Error ? err : new Error(String(err))))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);

  const { pollMs, poll } = options;
  useEffect(() => {
    if (!pollMs || data === undefined || (poll && !poll(data))) return;
    const timer = setTimeout(reload, pollMs);
    return () => clearTimeout(timer);
  }, [data, pollMs, poll, reload]);

  return { data, error, loading, reload };
}
