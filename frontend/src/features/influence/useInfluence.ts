import { useState } from "react";
import { errorMessage } from "../../api/client";
import { useAbortable } from "../../ui/hooks";
import { influenceApi, type InfluenceRequest, type InfluenceResponse } from "./api";

/** POST /api/influence: the last answer, busy and error; a new query aborts the one before. */
export function useInfluence() {
  const [res, setRes] = useState<InfluenceResponse | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const requests = useAbortable();

  const run = async (body: InfluenceRequest) => {
    const c = requests.start();
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
