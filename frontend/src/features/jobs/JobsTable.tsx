import { Fragment, useState } from "react";
import { errorMessage } from "../../api/client";
import { jobsApi, type Job, type JobStatus } from "./api";
import { formatAgo, formatCount, formatDuration, formatTimestamp, parseTime } from "../../ui/format";
import { Badge, type Tone } from "../../ui/components";

const STATUS_TONE: Record<JobStatus, Tone> = {
  queued: "neutral",
  running: "info",
  done: "good",
  failed: "bad",
};

/** Queued or running: still worth polling, still cancellable. */
export function isActiveStatus(status: string): boolean {
  return status === "queued" || status === "running";
}

export function isActive(job: Job): boolean {
  return isActiveStatus(job.status);
}

/** The badge tone of a run built by a job (a fine-tune, a diff, a Jacobian run): done, failed, or under way. */
export function runStatusTone(status: string): Tone {
  return status === "done" ? "good" : status === "failed" ? "bad" : "info";
}

/** Fraction complete in [0, 1], or null when unknown (no total yet). */
export function jobFraction(job: Job): number | null {
  if (job.status === "done") return 1;
  const { done, total } = job.progress;
  if (typeof total === "number" && total > 0) return Math.min(1, Math.max(0, done / total));
  return null;
}

function ProgressBar({ job }: { job: Job }) {
  const frac = jobFraction(job);
  const { done, total, message } = job.progress;
  const indeterminate = frac === null && job.status === "running";
  const pct = frac === null ? 0 : frac * 100;
  const counts =
    typeof total === "number" ? `${formatCount(done)} / ${formatCount(total)}` : done > 0 ? formatCount(done) : "";
  return (
    <div className="progress-cell">
      <div
        className={`progress progress-${job.status}${indeterminate ? " progress-indeterminate" : ""}`}
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={frac === null ? undefined : Math.round(pct)}
        data-testid="job-progress"
        data-value={frac === null ? "" : frac.toFixed(4)}
      >
        <div className="progress-fill" style={{ width: indeterminate ? undefined : `${pct}%` }} />
      </div>
      <div className="progress-text">
        {frac !== null && job.status !== "done" && <span className="mono">{Math.floor(pct)}%</span>}
        {counts && <span className="mono muted nowrap">{counts}</span>}
        {message && <span className="progress-message" title={message}>{message}</span>}
      </div>
    </div>
  );
}

function duration(job: Job, now: number): string {
  const start = parseTime(job.started_at);
  if (!start) return job.status === "queued" ? "waiting" : "—";
  const end = parseTime(job.finished_at);
  const ms = (end ? end.getTime() : now) - start.getTime();
  return formatDuration(ms);
}

/** Cancel a queued or running job; the table shows its new status at the next poll (`onCancelled`). */
function CancelButton({ job, onCancelled }: { job: Job; onCancelled?: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const cancel = async () => {
    setBusy(true);
    setError(null);
    try {
      await jobsApi.cancel(job.id);
      onCancelled?.();
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };
  return (
    <>
      <button
        type="button"
        className="btn btn-small btn-ghost"
        onClick={() => void cancel()}
        disabled={busy}
        title={job.status === "running" ? "stop it at its next progress report" : "take it off the queue"}
        data-testid="job-cancel"
      >
        {busy ? "cancelling…" : "cancel"}
      </button>
      {error && (
        <div className="text-bad small" data-testid="job-cancel-error">
          {error}
        </div>
      )}
    </>
  );
}

export function JobsTable({ jobs, now, onCancelled }: { jobs: Job[]; now: number; onCancelled?: () => void }) {
  const [open, setOpen] = useState<Set<number>>(() => new Set());
  const toggle = (id: number) =>
    setOpen((prev) => {
      const next = new Set(prev);
      if (next.has(id)) next.delete(id);
      else next.add(id);
      return next;
    });
  const sorted = [...jobs].sort((a, b) => b.id - a.id);

  return (
    <table className="table jobs-table" data-testid="jobs-table">
      <thead>
        <tr>
          <th className="num">#</th>
          <th>Job</th>
          <th>Status</th>
          <th className="progress-col">Progress</th>
          <th>Created</th>
          <th className="num">Duration</th>
          <th>Artifacts</th>
        </tr>
      </thead>
      <tbody>
        {sorted.length === 0 && (
          <tr>
            <td colSpan={7} className="muted empty-row">
              No jobs yet. Jobs appear here when you run <span className="mono">loupe build</span> or start an analysis.
            </td>
          </tr>
        )}
        {sorted.map((job) => {
          const created = parseTime(job.created_at);
          const artifacts = job.artifacts && typeof job.artifacts === "object" ? job.artifacts : {};
          const nArtifacts = Object.keys(artifacts).length;
          const isOpen = open.has(job.id);
          return (
            <Fragment key={job.id}>
              <tr data-testid="job-row" data-job-id={job.id} data-status={job.status} className={`job-row job-${job.status}`}>
                <td className="num mono muted">{job.id}</td>
                <td className="job-name-cell">
                  <div className="job-name">{job.name || job.kind}</div>
                  <div className="job-kind mono">{job.kind}</div>
                  {job.status === "failed" && job.error && (
                    <div className="job-error mono" data-testid="job-error">
                      {job.error}
                    </div>
                  )}
                </td>
                <td>
                  <Badge tone={STATUS_TONE[job.status] ?? "neutral"} testId="job-status">
                    {job.status}
                  </Badge>
                  {isActive(job) && (
                    <div>
                      <CancelButton key={`${job.id}:${job.status}`} job={job} onCancelled={onCancelled} />
                    </div>
                  )}
                </td>
                <td className="progress-col">
                  <ProgressBar job={job} />
                </td>
                <td className="nowrap" title={job.created_at}>
                  <div>{formatTimestamp(created)}</div>
                  <div className="muted small">{formatAgo(created, now)}</div>
                </td>
                <td className="num mono nowrap" data-testid="job-duration">
                  {duration(job, now)}
                </td>
                <td>
                  <button
                    type="button"
                    className="btn btn-small btn-ghost"
                    onClick={() => toggle(job.id)}
                    disabled={nArtifacts === 0}
                    aria-expanded={isOpen}
                    data-testid="job-artifacts-toggle"
                  >
                    {nArtifacts === 0 ? "none" : `${isOpen ? "▾" : "▸"} ${nArtifacts} item${nArtifacts === 1 ? "" : "s"}`}
                  </button>
                </td>
              </tr>
              {isOpen && nArtifacts > 0 && (
                <tr className="artifacts-row" data-testid="job-artifacts">
                  <td />
                  <td colSpan={6}>
                    <pre className="json">{JSON.stringify(artifacts, null, 2)}</pre>
                  </td>
                </tr>
              )}
            </Fragment>
          );
        })}
      </tbody>
    </table>
  );
}
