import { useState, type ChangeEvent } from "react";
import { errorMessage } from "../../api/client";
import { ErrorBox, Panel, Spinner } from "../../ui/components";
import { jacobianApi, type JacobianSettings } from "./api";
import { submitTo } from "../../ui/events";

/** Belrose & Scherlis's setting: 4,810 parameters, 625 steps. */
const PAPER: JacobianSettings = {
  seed: 0,
  width: 64,
  depth: 1,
  epochs: 25,
  batch_size: 64,
  lr: 0.1,
  momentum: 0.9,
  control: "none",
  experiments: true,
  dtype: "float64",
  init: "lecun",
};

/** Start a training-Jacobian run; the server says why a setting cannot run (4xx detail). */
export function StartRunPanel({ onStarted }: { onStarted: (runId: string) => void }) {
  const [form, setForm] = useState<JacobianSettings>(PAPER);
  const [error, setError] = useState<string | null>(null);
  const [starting, setStarting] = useState(false);

  const start = async () => {
    setStarting(true);
    setError(null);
    try {
      const r = await jacobianApi.start(form);
      onStarted(r.run_id);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setStarting(false);
    }
  };
  const num = (k: keyof JacobianSettings) => (e: ChangeEvent<HTMLInputElement>) => setForm({ ...form, [k]: Number(e.target.value) });

  return (
    <Panel title="Start a run" testId="jacobian-form-panel">
      <form onSubmit={submitTo(() => void start())} data-testid="jacobian-form" className="gen-form">
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
      {error && <ErrorBox title="Cannot start this run" message={error} testId="jacobian-start-error" />}
      <p className="muted small">
        Same settings, same run: a finished run is never recomputed. Runs differing only in seed give the bulk-overlap figure; runs
        differing only in the data give the controls overlay.
      </p>
    </Panel>
  );
}
