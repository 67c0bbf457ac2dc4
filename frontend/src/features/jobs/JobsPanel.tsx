import { errorMessage } from "../../api/client";
import { Badge, ErrorBox, Panel, Spinner } from "../../ui/components";
import { useNow, type Polled } from "../../ui/hooks";
import type { JobsResponse } from "./api";
import { isActive, JobsTable } from "./JobsTable";

/** The jobs table with the number of active jobs and how often it refreshes. */
export function JobsPanel({ jobs }: { jobs: Polled<JobsResponse> }) {
  const jobList = jobs.data?.jobs ?? [];
  const nActive = jobList.filter(isActive).length;
  const now = useNow(1000, nActive > 0);
  return (
    <Panel
      title={
        <>
          Jobs {nActive > 0 && <Badge tone="info">{nActive} active</Badge>}
        </>
      }
      actions={
        <span className="muted small" data-testid="jobs-poll">
          {jobs.error ? <span className="text-bad">update failed, retrying</span> : `refreshing every ${nActive > 0 ? 1 : 5} s`}
        </span>
      }
    >
      {jobs.loading && !jobs.data ? (
        <Spinner />
      ) : jobs.error && !jobs.data ? (
        <ErrorBox title="Could not load jobs" message={errorMessage(jobs.error)} testId="jobs-error" />
      ) : (
        <div className="table-scroll">
          <JobsTable jobs={jobList} now={now} onCancelled={jobs.refresh} />
        </div>
      )}
    </Panel>
  );
}
