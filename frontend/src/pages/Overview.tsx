import { useEffect, useMemo, useRef } from "react";
import { errorMessage } from "../api/client";
import { evalsApi } from "../features/evals/api";
import { jobsApi } from "../features/jobs/api";
import type { HealthResponse, ModelsResponse } from "../features/models/api";
import { DemoEval, latestEval } from "../features/evals/DemoEval";
import { JobsTable, isActive } from "../features/jobs/JobsTable";
import { ModelCard } from "../features/models/ModelCard";
import { Badge, Empty, ErrorBox, Panel, Spinner } from "../ui/components";
import { useDocumentTitle, useNow, usePolling, type Polled } from "../ui/hooks";

/** Jobs poll every 1 s while any job is queued or running, else every 5 s. */
export const JOBS_FAST_MS = 1000;
export const JOBS_SLOW_MS = 5000;

export function Overview({ health, models }: { health: Polled<HealthResponse>; models: Polled<ModelsResponse> }) {
  useDocumentTitle("Overview");

  const evals = usePolling(evalsApi.evals, (_d, e) => (e ? 5000 : 30000));
  const jobs = usePolling(jobsApi.jobs, (d) => (d?.jobs.some(isActive) ? JOBS_FAST_MS : JOBS_SLOW_MS));

  const jobList = jobs.data?.jobs ?? [];
  const anyActive = jobList.some(isActive);
  const now = useNow(1000, anyActive);

  // When a job finishes, the model list, evals and health may have changed.
  const finishedKey = jobList
    .filter((j) => !isActive(j))
    .map((j) => `${j.id}:${j.status}`)
    .join(",");
  const prevFinished = useRef<string | null>(null);
  const { refresh: refreshModels } = models;
  const { refresh: refreshEvals } = evals;
  const { refresh: refreshHealth } = health;
  useEffect(() => {
    if (!jobs.data) return;
    if (prevFinished.current !== null && prevFinished.current !== finishedKey) {
      refreshModels();
      refreshEvals();
      refreshHealth();
    }
    prevFinished.current = finishedKey;
  }, [jobs.data, finishedKey, refreshModels, refreshEvals, refreshHealth]);

  const modelList = models.data?.models ?? [];
  const primary = modelList.find((m) => m.loaded) ?? modelList[0];
  const others = modelList.filter((m) => m !== primary);
  const demo = useMemo(() => latestEval(evals.data?.evals ?? [], "demo"), [evals.data]);
  const nActive = jobList.filter(isActive).length;
  const h = health.data;

  return (
    <div className="page overview">
      <header className="page-head">
        <h1>Overview</h1>
        <p className="lede">The model under study, this workspace, its latest behaviour evaluation and the jobs that build it.</p>
      </header>

      <div className="grid-2">
        <Panel title="Model">
          {models.loading && !models.data ? (
            <Spinner />
          ) : models.error && !models.data ? (
            <ErrorBox title="Could not load models" message={errorMessage(models.error)} testId="models-error" />
          ) : primary ? (
            <>
              <ModelCard model={primary} />
              {others.length > 0 && (
                <div className="other-models">
                  <h3>Other models</h3>
                  <ul>
                    {others.map((m) => (
                      <li key={m.id}>
                        <span className="mono">{m.name}</span> <span className="muted">({m.source}, {m.n_layers} layers)</span>
                      </li>
                    ))}
                  </ul>
                </div>
              )}
            </>
          ) : (
            <div className="model-card" data-testid="model-card">
              <Empty>
                No model registered yet. Build the demo world with <span className="mono">loupe build</span>, or point Loupe at a
                Hugging Face model.
              </Empty>
            </div>
          )}
        </Panel>

        <Panel title="Workspace">
          {health.error && !h ? (
            <ErrorBox title="Server unreachable" message={errorMessage(health.error)} testId="health-error" />
          ) : !h ? (
            <Spinner />
          ) : (
            <dl className="kv-list" data-testid="workspace-info">
              <div className="kv">
                <dt className="kv-key">Workspace</dt>
                <dd className="kv-value mono" data-testid="workspace-path" title={h.workspace}>
                  {h.workspace}
                </dd>
              </div>
              <div className="kv">
                <dt className="kv-key">Database</dt>
                <dd className="kv-value" data-testid="database-kind">
                  <Badge tone="neutral">{h.database}</Badge>
                </dd>
              </div>
              <div className="kv">
                <dt className="kv-key">Model</dt>
                <dd className="kv-value" data-testid="model-ready">
                  {h.model_ready ? <Badge tone="good">ready</Badge> : <Badge tone="warn">not ready</Badge>}
                </dd>
              </div>
              <div className="kv">
                <dt className="kv-key">Server</dt>
                <dd className="kv-value mono">
                  loupe {h.version} · {h.status}
                </dd>
              </div>
            </dl>
          )}
        </Panel>
      </div>

      <Panel title="Latest demo evaluation">
        {evals.loading && !evals.data ? (
          <Spinner />
        ) : evals.error && !evals.data ? (
          <ErrorBox title="Could not load evaluations" message={errorMessage(evals.error)} testId="evals-error" />
        ) : demo ? (
          <DemoEval ev={demo} />
        ) : (
          <Empty>
            No demo evaluation yet. Run <span className="mono">loupe eval</span> once the demo model is built.
          </Empty>
        )}
      </Panel>

      <Panel
        title={
          <>
            Jobs {nActive > 0 && <Badge tone="info">{nActive} active</Badge>}
          </>
        }
        actions={
          <span className="muted small" data-testid="jobs-poll">
            {jobs.error ? <span className="text-bad">update failed, retrying</span> : `refreshing every ${anyActive ? 1 : 5} s`}
          </span>
        }
      >
        {jobs.loading && !jobs.data ? (
          <Spinner />
        ) : jobs.error && !jobs.data ? (
          <ErrorBox title="Could not load jobs" message={errorMessage(jobs.error)} testId="jobs-error" />
        ) : (
          <div className="table-scroll">
            <JobsTable jobs={jobList} now={now} />
          </div>
        )}
      </Panel>
    </div>
  );
}
