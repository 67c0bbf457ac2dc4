// /jacobian: the training Jacobian d theta_T / d theta_0 (Belrose & Scherlis 2024) of a small MLP on
// the digits data: runs (jobs keyed by their settings), the spectrum with its chaotic / bulk / stable
// regions, the alignment cos(u_i, v_i), the perturbation experiment, the seed overlap and the controls;
// and the per-token layer Jacobian of the language model.
import { useState, type FormEvent } from "react";
import { errorMessage } from "../api/client";
import { LayerJacobianResult } from "../features/jacobian/LayerJacobianResult";
import { useLayerJacobian } from "../features/jacobian/useLayerJacobian";
import { jacobianApi, type JacobianRun, type JacobianSettings } from "../features/jacobian/api";
import { Plot, type Figure } from "../ui/Plot";
import { Badge, Empty, ErrorBox, Panel, Spinner } from "../ui/components";
import { formatValue } from "../ui/format";
import { useDocumentTitle, usePolling, useRequest } from "../ui/hooks";

const PAPER: JacobianSettings = {
  seed: 0, width: 64, depth: 1, epochs: 25, batch_size: 64, lr: 0.1, momentum: 0.9, control: "none", experiments: true, dtype: "float64", init: "lecun",
};

function settingsLabel(s: Record<string, unknown>): string {
  const init = s.init && s.init !== "lecun" ? ` · init ${formatValue(s.init)}` : "";
  const dtype = s.dtype === "float32" ? " · float32" : "";
  return `seed ${String(s.seed)} · width ${String(s.width)} · ${String(s.epochs)} ep · lr ${String(s.lr)} · ${String(s.control)}${dtype}${init}`;
}

const fmt = (x: number | null | undefined, d = 3) => (x === null || x === undefined ? "–" : x.toFixed(d));

export function Jacobian() {
  useDocumentTitle("Jacobian");
  const runs = usePolling(jacobianApi.runs, (d, e) => (e ? 5000 : d?.runs.some((r) => r.status !== "done" && r.status !== "failed") ? 1000 : 10000));
  const [selected, setSelected] = useState<string | null>(null);
  const [form, setForm] = useState<JacobianSettings>(PAPER);
  const [startError, setStartError] = useState<string | null>(null);
  const [starting, setStarting] = useState(false);

  const list = runs.data?.runs ?? [];
  const done = list.filter((r) => r.status === "done");
  const current = selected ?? done[0]?.run_id ?? null;
  const nDone = done.length;

  // Refetched when the number of finished runs changes (new seeds / controls join the figures);
  // the last run stays on screen while another loads.
  const runKey = current && done.some((r) => r.run_id === current) ? `${current}|${nDone}` : null;
  const { latest: run, error: runError } = useRequest(runKey, (signal) => jacobianApi.run(current ?? "", signal));

  const start = async (e: FormEvent) => {
    e.preventDefault();
    setStarting(true);
    setStartError(null);
    try {
      const r = await jacobianApi.start(form);
      setSelected(r.run_id);
      runs.refresh();
    } catch (err) {
      setStartError(errorMessage(err));
    } finally {
      setStarting(false);
    }
  };
  const num = (k: keyof JacobianSettings) => (e: React.ChangeEvent<HTMLInputElement>) => setForm({ ...form, [k]: Number(e.target.value) });

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
        <Panel title="Runs" testId="jacobian-runs">
          {runs.error && !runs.data ? <ErrorBox message={errorMessage(runs.error)} /> : null}
          {list.length === 0 ? (
            <Empty>No runs yet. The build computes the paper&apos;s setting (4,810 parameters, 625 steps; about 10 minutes on 2 CPU cores) as its last background step; other settings start below.</Empty>
          ) : (
            <div className="table-scroll">
              <table className="table compact">
                <thead>
                  <tr>
                    <th>run</th>
                    <th>settings</th>
                    <th>status</th>
                    <th className="num">σ₁</th>
                    <th className="num">bulk</th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((r) => {
                    const s = r.summary as Record<string, number> | null | undefined;
                    return (
                      <tr
                        key={r.run_id}
                        data-testid="jacobian-run-row"
                        data-status={r.status}
                        data-run-id={r.run_id}
                        className={r.run_id === current ? "active" : ""}
                        style={{ cursor: r.status === "done" ? "pointer" : "default", fontWeight: r.run_id === current ? 600 : undefined }}
                        onClick={() => r.status === "done" && setSelected(r.run_id)}
                      >
                        <td className="mono small">{r.run_id}</td>
                        <td className="small">{settingsLabel(r.settings)}</td>
                        <td>
                          <Badge tone={r.status === "done" ? "good" : r.status === "failed" ? "bad" : "info"}>{r.status}</Badge>
                          {r.status !== "done" && r.progress ? (
                            <span className="muted small" title={formatValue(r.progress.message ?? "")}>
                              {" "}
                              {r.progress.total ? `${Math.round((100 * Number(r.progress.done)) / Number(r.progress.total))}%` : ""}
                            </span>
                          ) : null}
                        </td>
                        <td className="num">{s ? fmt(s.sigma_1, 2) : ""}</td>
                        <td className="num">{s ? `${(100 * s.bulk_fraction).toFixed(0)}%` : ""}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )}
        </Panel>

        <Panel title="Start a run" testId="jacobian-form-panel">
          <form onSubmit={(e) => void start(e)} data-testid="jacobian-form" className="gen-form">
            <div style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }}>
              <label className="field">
                <span className="field-label">seed</span>
                <input type="number" value={form.seed} onChange={num("seed")} data-testid="jacobian-seed" style={{ width: 70 }} />
              </label>
              <label className="field">
                <span className="field-label">width</span>
                <input type="number" value={form.width} onChange={num("width")} data-testid="jacobian-width" style={{ width: 80 }} />
              </label>
              <label className="field">
                <span className="field-label">epochs</span>
                <input type="number" value={form.epochs} onChange={num("epochs")} data-testid="jacobian-epochs" style={{ width: 70 }} />
              </label>
              <label className="field">
                <span className="field-label">learning rate</span>
                <input type="number" step="any" value={form.lr} onChange={num("lr")} data-testid="jacobian-lr" style={{ width: 80 }} />
              </label>
              <label className="field">
                <span className="field-label">data</span>
                <select
                  value={form.control}
                  onChange={(e) => setForm({ ...form, control: e.target.value as JacobianSettings["control"] })}
                  data-testid="jacobian-control"
                >
                  <option value="none">digits</option>
                  <option value="white_noise">white-noise inputs</option>
                  <option value="shuffled_labels">shuffled labels</option>
                </select>
              </label>
              <label className="field">
                <span className="field-label">init</span>
                <select
                  value={form.init}
                  onChange={(e) => setForm({ ...form, init: e.target.value as JacobianSettings["init"] })}
                  data-testid="jacobian-init"
                  title="lecun: the authors' code (Flax Dense defaults); torch: PyTorch's nn.Linear default"
                >
                  <option value="lecun">LeCun normal, zero bias</option>
                  <option value="torch">PyTorch default</option>
                </select>
              </label>
              <label>
                <input
                  type="checkbox"
                  checked={form.experiments}
                  onChange={(e) => setForm({ ...form, experiments: e.target.checked })}
                  data-testid="jacobian-experiments"
                />{" "}
                perturbation experiment
              </label>
            </div>
            <div style={{ display: "flex", gap: 10, alignItems: "center" }}>
              <button type="submit" className="btn btn-primary" disabled={starting} data-testid="jacobian-start">
                Start run
              </button>
              <button type="button" className="btn btn-ghost" onClick={() => setForm(PAPER)} data-testid="jacobian-paper">
                Paper settings
              </button>
              {starting && <Spinner />}
            </div>
          </form>
          {startError && <ErrorBox title="Cannot start this run" message={startError} testId="jacobian-start-error" />}
          <p className="muted small">
            Same settings, same run: a finished run is never recomputed. Runs differing only in seed give the bulk-overlap figure; runs
            differing only in the data give the controls overlay.
          </p>
        </Panel>
      </div>

      {runError && <ErrorBox message={runError} />}
      {run && <RunView run={run} />}

      <LayerTool />
    </div>
  );
}

function RunView({ run }: { run: JacobianRun }) {
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
            <dd data-testid="jacobian-sigma1">{fmt(run.singular_values[0], 2)}</dd>
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
            <dd>{fmt(regions.bulk.median_alignment)}</dd>
          </div>
          <div className="stat">
            <dt>trained net: test loss / acc</dt>
            <dd>
              {fmt(m.final?.test_loss)} / {m.final ? `${(100 * m.final.test_acc).toFixed(1)}%` : "–"}
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

function LayerTool() {
  const [prompt, setPrompt] = useState("User: How do I bake bread at home?\nAssistant:");
  const [position, setPosition] = useState(-1);
  const [hookIn, setHookIn] = useState("blocks.0.hook_resid_pre");
  const [hookOut, setHookOut] = useState("blocks.1.hook_resid_post");
  const { res, error, busy, compute } = useLayerJacobian();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void compute(prompt, position, hookIn, hookOut);
  };

  return (
    <Panel title="Layer Jacobian of the language model, per token" testId="jacobian-layer">
      <form onSubmit={submit} className="gen-form" data-testid="jacobian-layer-form">
        <label className="field">
          <span className="field-label">Prompt</span>
          <textarea rows={2} value={prompt} onChange={(e) => setPrompt(e.target.value)} data-testid="jacobian-layer-prompt" />
        </label>
        <div style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }}>
          <label className="field">
            <span className="field-label">position (−1 = last)</span>
            <input type="number" value={position} onChange={(e) => setPosition(Number(e.target.value))} data-testid="jacobian-layer-position" style={{ width: 90 }} />
          </label>
          <label className="field">
            <span className="field-label">from hook</span>
            <input value={hookIn} onChange={(e) => setHookIn(e.target.value)} data-testid="jacobian-layer-hook-in" className="mono" />
          </label>
          <label className="field">
            <span className="field-label">to hook</span>
            <input value={hookOut} onChange={(e) => setHookOut(e.target.value)} data-testid="jacobian-layer-hook-out" className="mono" />
          </label>
          <button type="submit" className="btn btn-primary" disabled={busy} data-testid="jacobian-layer-run">
            Compute
          </button>
          {busy && <Spinner />}
        </div>
      </form>
      {error && <ErrorBox message={error} testId="jacobian-layer-error" />}
      {res && <LayerJacobianResult res={res} />}
    </Panel>
  );
}
