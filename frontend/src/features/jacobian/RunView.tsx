import { Empty, Panel } from "../../ui/components";
import { formatFixed } from "../../ui/format";
import { Plot, type Figure } from "../../ui/Plot";
import type { JacobianRun } from "./api";

/** One finished run: the spectrum and its regions, alignment, perturbation experiment, seed overlap. */
export function RunView({ run }: { run: JacobianRun }) {
  const f = run.figures as Record<string, Figure>;
  const regions = run.regions as Record<string, { count: number; fraction: number; boundary: string; median_alignment: number | null }>;
  const pert = run.perturbation as { eps: number; by_region: Record<string, { n: number; abs_test_loss_change: number; kl_test: number; kl_noise: number }> } | null;
  const m = run.metrics as { final?: { test_loss: number; test_acc: number } };
  return (
    <>
      <Panel title={`Spectrum of run ${run.run_id}`} testId="jacobian-spectrum-panel">
        <div className="stat-grid" data-testid="jacobian-regions">
          <div className="stat">
            <dt>σ₁</dt>
            <dd data-testid="jacobian-sigma1">{formatFixed(run.singular_values[0], 2)}</dd>
          </div>
          {(["chaotic", "bulk", "stable"] as const).map((k) => (
            <div className="stat" key={k} data-testid={`jacobian-region-${k}`}>
              <dt>
                {k} <span className="muted small">({regions[k].boundary})</span>
              </dt>
              <dd>
                {regions[k].count.toLocaleString()} ({(100 * regions[k].fraction).toFixed(1)}%)
              </dd>
            </div>
          ))}
          <div className="stat">
            <dt>median bulk alignment</dt>
            <dd>{formatFixed(regions.bulk.median_alignment)}</dd>
          </div>
          <div className="stat">
            <dt>trained net: test loss / acc</dt>
            <dd>
              {formatFixed(m.final?.test_loss)} / {m.final ? `${(100 * m.final.test_acc).toFixed(1)}%` : "–"}
            </dd>
          </div>
        </div>
        <p className="muted small">
          {run.n_params.toLocaleString()} parameters · J in {String((run.seconds as Record<string, number>).jacobian)} s
          {run.controls.length ? ` · overlaid: ${run.controls.join(", ")}` : ""}
        </p>
        <Plot figure={f.spectrum} height={380} testId="jacobian-spectrum" />
      </Panel>
      <div className="grid-2">
        <Panel title="Alignment">
          <Plot figure={f.alignment} height={340} testId="jacobian-alignment" />
        </Panel>
        <Panel title="Perturbation experiment" testId="jacobian-perturbation">
          {pert ? (
            <>
              <Plot figure={f.perturbation} height={340} testId="jacobian-perturbation-plot" />
              <table className="table compact" data-testid="jacobian-experiment-table">
                <thead>
                  <tr>
                    <th>direction</th>
                    <th className="num">n</th>
                    <th className="num">|Δ test loss|</th>
                    <th className="num">KL test</th>
                    <th className="num">KL noise</th>
                  </tr>
                </thead>
                <tbody>
                  {Object.entries(pert.by_region).map(([k, v]) => (
                    <tr key={k}>
                      <td>{k}</td>
                      <td className="num">{v.n}</td>
                      <td className="num">{v.abs_test_loss_change.toExponential(2)}</td>
                      <td className="num">{v.kl_test.toExponential(2)}</td>
                      <td className="num">{v.kl_noise.toExponential(2)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
              <p className="muted small">Retrained from θ₀ + {pert.eps}·v for the top right singular vectors of each region and random unit directions.</p>
            </>
          ) : (
            <Empty>This run was started without the experiment.</Empty>
          )}
        </Panel>
      </div>
      <Panel title="Other seeds: bulk-subspace overlap" testId="jacobian-overlap">
        {run.seed_overlap.length ? (
          <Plot figure={f.overlap} height={300} testId="jacobian-overlap-plot" />
        ) : (
          <Empty>Start the same settings with another seed to compare bulk subspaces (overlap vs the random baseline k/P).</Empty>
        )}
      </Panel>
    </>
  );
}
