import { useEffect, useRef, useState } from "react";
import { errorMessage } from "../../api/client";
import { influenceApi, type InfluenceRequest, type InfluenceResponse } from "./api";

/** POST /api/influence: the last answer, busy and error; a new query aborts the one before. */
export function useInfluence() {
  const [res, setRes] = useState<InfluenceResponse | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const ctrl = useRef<AbortController | null>(null);
  useEffect(() => () => ctrl.current?.abort(), []);

  const run = async (body: InfluenceRequest) => {
    ctrl.current?.abort();
    const c = new AbortController();
    ctrl.current = c;
    setBusy(true);
    setError(null);
    try {
      setRes(await influenceApi.influence(body, c.signal));
    } catch (err) {
      if (!c.signal.aborted) setError(errorMessage(err));
    } finally {
      if (!c.signal.aborted) setBusy(false);
    }
  };

  return { res, busy, error, run };
}
