import { useState } from "react";
import { usePolling, useRequest } from "../../ui/hooks";
import { jacobianApi } from "./api";

const isRunning = (status: string) => status !== "done" && status !== "failed";

/** The training-Jacobian runs (polled fast while one is running) and the one shown: the selected
 * run, else the newest finished one. */
export function useJacobianRuns() {
  const list = usePolling(jacobianApi.runs, (d, e) => (e ? 5000 : d?.runs.some((r) => isRunning(r.status)) ? 1000 : 10000));
  const [selected, setSelected] = useState<string | null>(null);
  const runs = list.data?.runs ?? [];
  const done = runs.filter((r) => r.status === "done");
  const current = selected ?? done[0]?.run_id ?? null;

  // Refetched when the number of finished runs changes (new seeds / controls join the figures);
  // the last run stays on screen while another loads.
  const runKey = current && done.some((r) => r.run_id === current) ? `${current}|${done.length}` : null;
  const { latest: run, error: runError } = useRequest(runKey, (signal) => jacobianApi.run(current ?? "", signal));

  return {
    runs,
    listError: list.error && !list.data ? list.error : null,
    current,
    select: setSelected,
    run,
    runError,
    refresh: list.refresh,
  };
}
