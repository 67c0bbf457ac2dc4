import { useEffect, useState } from "react";
import { errorMessage } from "../../api/client";
import { steeringApi, type NextToken, type NextTokenRequest } from "./api";

export interface NextTokenAnswer {
  data: NextToken;
  /** Round trip in milliseconds. */
  ms: number;
  /** The request this answers. */
  request: NextTokenRequest;
}

/**
 * Live editing: POST /api/steering/next-token whenever `request` changes (by value), `debounceMs`
 * after the last change; a newer request aborts an older one. A null request asks nothing and
 * keeps the last answer. The last answer also stays after an error (shown beside it).
 */
export function useNextToken(request: NextTokenRequest | null, debounceMs: number) {
  const [answer, setAnswer] = useState<NextTokenAnswer | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const key = request === null ? null : JSON.stringify(request);

  useEffect(() => {
    if (key === null) return;
    const body = JSON.parse(key) as NextTokenRequest;
    const c = new AbortController();
    const t = setTimeout(() => {
      const t0 = performance.now();
      setBusy(true);
      steeringApi
        .nextToken(body, c.signal)
        .then((data) => {
          setAnswer({ data, ms: performance.now() - t0, request: body });
          setError(null);
        })
        .catch((e: unknown) => {
          if (!c.signal.aborted) setError(errorMessage(e));
        })
        .finally(() => {
          if (!c.signal.aborted) setBusy(false);
        });
    }, debounceMs);
    return () => {
      clearTimeout(t);
      c.abort();
      setBusy(false);
    };
  }, [key, debounceMs]);

  return { answer, error, busy };
}
