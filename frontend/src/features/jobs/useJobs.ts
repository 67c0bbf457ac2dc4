import { useEffect, useEffectEvent, useRef } from "react";
import { usePolling } from "../../ui/hooks";
import { jobsApi } from "./api";
import { isActive } from "./JobsTable";

/** Jobs poll every 1 s while any job is queued or running, else every 5 s. */
export const JOBS_FAST_MS = 1000;
export const JOBS_SLOW_MS = 5000;

/** The polled job list; `onJobFinished` runs when a job has finished since the last poll (what it
 * built may have changed the models, evals and health). */
export function useJobs(onJobFinished: () => void) {
  const jobs = usePolling(jobsApi.jobs, (d) => (d?.jobs.some(isActive) ? JOBS_FAST_MS : JOBS_SLOW_MS));
  const finishedKey = (jobs.data?.jobs ?? [])
    .filter((j) => !isActive(j))
    .map((j) => `${j.id}:${j.status}`)
    .join(",");
  const prevFinished = useRef<string | null>(null);
  const finished = useEffectEvent(onJobFinished);
  const loaded = jobs.data !== undefined;
  useEffect(() => {
    if (!loaded) return;
    if (prevFinished.current !== null && prevFinished.current !== finishedKey) finished();
    prevFinished.current = finishedKey;
  }, [loaded, finishedKey]);
  return jobs;
}
