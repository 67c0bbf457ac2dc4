// /jacobian: the training Jacobian d theta_T / d theta_0 (Belrose & Scherlis 2024) of a small MLP on
// the digits data: runs (jobs keyed by their settings), the spectrum with its chaotic / bulk / stable
// regions, the alignment cos(u_i, v_i), the perturbation experiment, the seed overlap and the controls;
// and the per-token layer Jacobian of the language model.
import { LayerTool } from "../features/jacobian/LayerTool";
import { RunsPanel } from "../features/jacobian/RunsPanel";
import { RunView } from "../features/jacobian/RunView";
import { StartRunPanel } from "../features/jacobian/StartRunPanel";
import { useJacobianRuns } from "../features/jacobian/useJacobianRuns";
import { ErrorBox } from "../ui/components";
import { useDocumentTitle } from "../ui/hooks";

export function Jacobian() {
  useDocumentTitle("Jacobian");
  const { runs, listError, current, select, run, runError, refresh } = useJacobianRuns();

  return (
    <div className="page" data-testid="jacobian-page">
      <header className="page-head">
        <h1>Jacobian</h1>
        <p className="lede">
          The training Jacobian J = ∂θ_T/∂θ_0 of an MLP on the digits data (Belrose &amp; Scherlis 2024), by forward mode through
          the whole training run, and its singular values: chaotic (σ ≥ 1.1), bulk (|σ − 1| &lt; 0.1), stable (σ ≤ 0.9).
        </p>
      </header>

      <div className="grid-2">
        <RunsPanel runs={runs} error={listError} current={current} onSelect={select} />
        <StartRunPanel
          onStarted={(runId) => {
            select(runId);
            refresh();
          }}
        />
      </div>

      {runError && <ErrorBox message={runError} />}
      {run && <RunView run={run} />}

      <LayerTool />
    </div>
  );
}
