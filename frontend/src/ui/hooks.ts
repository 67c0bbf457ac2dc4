import { useCallback, useEffect, useEffectEvent, useMemo, useRef, useState } from "react";
import { errorMessage } from "../api/client";

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
  // Effect events: the latest fetcher and interval without restarting the timer chain.
  const fetchNow = useEffectEvent((signal: AbortSignal) => fetcher(signal));
  const nextDelay = useEffectEvent((d: T | undefined, e: unknown) => interval(d, e));

  useEffect(() => {
    const ctrl = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;

    const run = async () => {
      let d: T | undefined;
      let e: unknown = null;
      try {
        d = await fetchNow(ctrl.signal);
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
      const next = nextDelay(d, e);
      if (next !== null) timer = setTimeout(() => void run(), next);
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

export interface Requested<T> {
  /** The answer for the current key (undefined while it loads or when it failed). */
  data: T | undefined;
  /** The last answer for any key, kept while the next one loads or after it failed. */
  latest: T | undefined;
  /** Why the request for the current key failed. */
  error: string | null;
  loading: boolean;
  /** Replace the current answer (after a local edit the server has accepted). */
  setData: (data: T) => void;
}

/**
 * Fetch `load` whenever `key` changes (a previous request is aborted); a null key fetches nothing
 * and forgets the last answer. State is set only when an answer arrives, so pages derive "loading"
 * and "stale" from the key instead of resetting state in an effect.
 */
export function useRequest<T>(key: string | null, load: (signal: AbortSignal) => Promise<T>): Requested<T> {
  const [state, setState] = useState<{ key: string | null; data: T | undefined; error: string | null }>({
    key: null,
    data: undefined,
    error: null,
  });
  const loadNow = useEffectEvent((signal: AbortSignal) => load(signal));
  if (key === null && (state.key !== null || state.data !== undefined)) {
    setState({ key: null, data: undefined, error: null });
  }

  useEffect(() => {
    if (key === null) return;
    const ctrl = new AbortController();
    loadNow(ctrl.signal).then(
      (data) => {
        if (!ctrl.signal.aborted) setState({ key, data, error: null });
      },
      (err: unknown) => {
        if (!ctrl.signal.aborted) setState((s) => ({ key, data: s.data, error: errorMessage(err) }));
      },
    );
    return () => ctrl.abort();
  }, [key]);

  const setData = useCallback((data: T) => setState((s) => ({ ...s, data, error: null })), []);
  const current = key !== null && state.key === key;
  return {
    data: current && state.error === null ? state.data : undefined,
    latest: state.data,
    error: current ? state.error : null,
    loading: key !== null && !current,
    setData,
  };
}

/** One request at a time: `start()` aborts the one in flight and gives the new one's controller;
 * `isLatest(c)` says whether no newer request has started since. Unmounting aborts. */
export function useAbortable() {
  const current = useRef<AbortController | null>(null);
  useEffect(() => () => current.current?.abort(), []);
  return useMemo(
    () => ({
      start() {
        current.current?.abort();
        const c = new AbortController();
        current.current = c;
        return c;
      },
      isLatest: (c: AbortController) => current.current === c,
    }),
    [],
  );
}

/** Re-render every `ms` while `active`, every `idleMs` otherwise (for live durations and "ago" times). */
export function useNow(ms: number, active: boolean, idleMs = 5000): number {
  const [now, setNow] = useState(() => Date.now());
  const every = active ? ms : idleMs;
  useEffect(() => {
    const tick = () => setNow(Date.now());
    const first = setTimeout(tick, 0); // at once when the rate changes (a job just started)
    const id = setInterval(tick, every);
    return () => {
      clearTimeout(first);
      clearInterval(id);
    };
  }, [every]);
  return now;
}

export function useDocumentTitle(title: string) {
  useEffect(() => {
    document.title = title ? `${title} · Loupe` : "Loupe";
  }, [title]);
}
