// A run backed by a job (a fine-tune, a diff): polled while its job is active, with a cancel that
// reports its own error and refreshes the run.
import { useState } from "react";
import { errorMessage } from "../../api/client";
import { usePolling, type Polled } from "../../ui/hooks";
import { isActiveStatus } from "./JobsTable";

export function useJobRun<T extends { status: string }>(
  fetcher: (signal: AbortSignal) => Promise<T>,
  jobOf: (run: T) => number | null | undefined,
  cancelJob: (jobId: number) => Promise<unknown>,
): { run: Polled<T>; error: string | null; cancel: () => Promise<void> } {
  const run = usePolling(fetcher, (d, e) => (e ? 5000 : d && !isActiveStatus(d.status) ? null : 1500));
  const [error, setError] = useState<string | null>(null);
  const cancel = async () => {
    const jobId = run.data ? jobOf(run.data) : null;
    if (jobId == null) return;
    setError(null);
    try {
      await cancelJob(jobId);
      run.refresh();
    } catch (err) {
      setError(errorMessage(err));
    }
  };
  return { run, error, cancel };
}
