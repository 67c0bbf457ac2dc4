// /: the model under study, this workspace, its latest behaviour evaluation and the jobs that build it.
import { evalsApi } from "../features/evals/api";
import { DemoEvalPanel } from "../features/evals/DemoEvalPanel";
import { JobsPanel } from "../features/jobs/JobsPanel";
import { useJobs } from "../features/jobs/useJobs";
import type { HealthResponse, ModelsResponse } from "../features/models/api";
import { ModelPanel } from "../features/models/ModelPanel";
import { WorkspacePanel } from "../features/models/WorkspacePanel";
import { useDocumentTitle, usePolling, type Polled } from "../ui/hooks";

export function Overview({ health, models }: { health: Polled<HealthResponse>; models: Polled<ModelsResponse> }) {
  useDocumentTitle("Overview");
  const evals = usePolling(evalsApi.evals, (_d, e) => (e ? 5000 : 30000));
  // When a job finishes, the model list, evals and health may have changed.
  const jobs = useJobs(() => {
    models.refresh();
    evals.refresh();
    health.refresh();
  });

  return (
    <div className="page overview">
      <header className="page-head">
        <h1>Overview</h1>
        <p className="lede">The model under study, this workspace, its latest behaviour evaluation and the jobs that build it.</p>
      </header>

      <div className="grid-2">
        <ModelPanel models={models} />
        <WorkspacePanel health={health} />
      </div>

      <DemoEvalPanel evals={evals} world={health.data?.world} />
      <JobsPanel jobs={jobs} />
    </div>
  );
}
