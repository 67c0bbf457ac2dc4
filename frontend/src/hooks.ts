import { useCallback, useEffect, useRef, useState } from "react";

export interface Polled<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  /** Fetch now (and restart the polling timer). */
  refresh: () => void;
}

/**
 * Fetch `fetcher` now and again after `interval(data)` milliseconds following
 * each completed request (never overlapping). `interval` may return null to stop.
 * The last good data is kept when a later request fails.
 */
export function usePolling<T>(
  fetcher: (signal: AbortSignal) => Promise<T>,
  interval: (data: T | undefined, error: unknown) => number | null,
): Polled<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const fetcherRef = useRef(fetcher);
  const intervalRef = useRef(interval);
  fetcherRef.current = fetcher;
  intervalRef.current = interval;

  useEffect(() => {
    const ctrl = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;

    const run = async () => {
      let d: T | undefined;
      let e: unknown = null;
      try {
        d = await fetcherRef.current(ctrl.signal);
      } catch (err) {
        if (stopped) return;
        e = err;
      }
      if (stopped) return;
      if (e) setError(e);
      else {
        setData(d);
        setError(null);
      }
      setLoading(false);
      const next = intervalRef.current(d, e);
      if (next !== null) timer = setTimeout(run, next);
    };
    void run();
    return () => {
      stopped = true;
      ctrl.abort();
      if (timer) clearTimeout(timer);
    };
  }, [tick]);

  const refresh = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, refresh };
}

/** Re-render every `ms` while `active` (for live durations). */
export function useNow(ms: number, active: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    const id = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(id);
  }, [ms, active]);
  return active ? now : Date.now();
}

export function useDocumentTitle(title: string) {
  useEffect(() => {
    document.title = title ? `${title} · Loupe` : "Loupe";
  }, [title]);
}
