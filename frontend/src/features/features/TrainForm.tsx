import { useEffect, useEffectEvent, useState } from "react";
import { errorMessage } from "../../api/client";
import { ErrorBox, Panel, SelectField, Spinner } from "../../ui/components";
import { submitTo } from "../../ui/events";
import { formatInt } from "../../ui/format";
import { usePolling } from "../../ui/hooks";
import { datasetsApi } from "../datasets/api";
import { jobsApi, type Job } from "../jobs/api";
import { isActive, jobFraction } from "../jobs/JobsTable";
import { modelsApi } from "../models/api";
import { saesApi, type TrainRequest } from "./api";

/** The hooks an SAE is usually trained on: residual stream, MLP and attention outputs. */
export const SAE_HOOK = /(hook_resid_(pre|mid|post)|hook_mlp_out|hook_attn_out|mlp\.hook_post)$/;
const ARCHITECTURES: { value: TrainRequest["architecture"]; label: string }[] = [
  { value: "topk", label: "TopK" },
  { value: "matryoshka", label: "Matryoshka TopK" },
  { value: "jumprelu", label: "JumpReLU (target L0 = k)" },
  { value: "standard", label: "ReLU + L1" },
];

interface Form {
  model_id: string;
  hook_name: string;
  dataset_id: string;
  architecture: NonNullable<TrainRequest["architecture"]>;
  expansion: number;
  k: number;
  train_tokens: number;
  name: string;
  first_position: boolean;
}

/** One training chain's jobs, polled until they finish. */
function ChainProgress({ ids, onDone }: { ids: number[]; onDone: (ok: boolean) => void }) {
  const jobs = usePolling(jobsApi.jobs, (d) => (d && ids.every((id) => d.jobs.some((j) => j.id === id && !isActive(j))) ? null : 1000));
  const mine = ids.map((id) => jobs.data?.jobs.find((j) => j.id === id)).filter((j): j is Job => j !== undefined);
  const outcome = mine.length === ids.length && mine.every((j) => !isActive(j)) ? (mine.every((j) => j.status === "done") ? "done" : "failed") : null;
  const report = useEffectEvent((ok: boolean) => onDone(ok));
  useEffect(() => {
    if (outcome !== null) report(outcome === "done");
  }, [outcome]);
  return (
    <ol className="train-jobs" data-testid="train-jobs">
      {mine.map((j) => {
        const f = jobFraction(j);
        return (
          <li key={j.id} data-testid="train-job" data-status={j.status}>
            <span className="mono">{j.name}</span> · {j.status}
            {j.status === "running" && f !== null && ` ${Math.round(f * 100)}%`}
            {j.status !== "done" && j.progress.message && <span className="muted small"> · {j.progress.message}</span>}
            {j.status === "failed" && j.error && <div className="text-bad small">{j.error.split("\n")[0]}</div>}
          </li>
        );
      })}
    </ol>
  );
}

/** Train an SAE on any model's hook (the current model's to start with) over a dataset; `onTrained` selects it once its jobs are done. */
export function TrainForm({ modelId, onTrained }: { modelId: string | null; onTrained: (saeId: string) => void }) {
  const models = usePolling(modelsApi.models, () => null);
  const datasets = usePolling(datasetsApi.datasets, () => null);
  const [form, setForm] = useState<Form>({
    model_id: modelId ?? "",
    hook_name: "",
    dataset_id: "",
    architecture: "topk",
    expansion: 8,
    k: 32,
    train_tokens: 400_000,
    name: "",
    first_position: false,
  });
  const [started, setStarted] = useState<{ sae: string; jobs: number[] } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const modelList = models.data?.models ?? [];
  const model = modelList.find((m) => m.id === form.model_id) ?? modelList[0];
  const hooks = (model?.hook_names ?? []).filter((h) => SAE_HOOK.test(h));
  const hook = hooks.includes(form.hook_name) ? form.hook_name : (hooks[0] ?? "");
  const datasetList = datasets.data?.datasets ?? [];
  const dataset = datasetList.some((d) => d.id === form.dataset_id) ? form.dataset_id : (datasetList[0]?.id ?? "");

  const start = async () => {
    if (!model || !hook || !dataset) return;
    setBusy(true);
    setError(null);
    setStarted(null);
    try {
      const r = await saesApi.train({
        model_id: model.id,
        hook_name: hook,
        dataset_id: dataset,
        architecture: form.architecture,
        expansion: form.expansion,
        k: form.k,
        train_tokens: form.train_tokens,
        name: form.name || null,
        first_position: form.first_position,
      });
      setStarted({ sae: r.sae.id, jobs: r.jobs.map((j) => j.id) });
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };
  const num = (k: "expansion" | "k" | "train_tokens") => (v: string) => setForm({ ...form, [k]: Number(v) });

  return (
    <Panel title="Train an SAE" testId="train-panel">
      <form onSubmit={submitTo(() => void start())} className="gen-form" data-testid="train-form">
        <div style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }}>
          <SelectField
            label="model"
            value={model?.id ?? ""}
            onChange={(v) => setForm({ ...form, model_id: v, hook_name: "" })}
            options={modelList.map((m) => m.id)}
            testId="train-model"
          />
          <SelectField label="hook" value={hook} onChange={(v) => setForm({ ...form, hook_name: v })} options={hooks} testId="train-hook" />
          <SelectField
            label="dataset"
            value={dataset}
            onChange={(v) => setForm({ ...form, dataset_id: v })}
            options={datasetList.map((d) => d.id)}
            testId="train-dataset"
          />
          <SelectField
            label="architecture"
            value={form.architecture}
            onChange={(v) => setForm({ ...form, architecture: v as Form["architecture"] })}
            options={ARCHITECTURES}
            testId="train-architecture"
          />
          <label className="field" title="d_sae = expansion × the hook's width">
            <span className="field-label">width (× hook)</span>
            <input type="number" min={1} max={64} value={form.expansion} onChange={(e) => num("expansion")(e.target.value)} style={{ width: 70 }} data-testid="train-expansion" />
          </label>
          <label className="field" title="active features per token (JumpReLU: the target L0; unused by ReLU + L1)">
            <span className="field-label">k</span>
            <input type="number" min={1} value={form.k} onChange={(e) => num("k")(e.target.value)} style={{ width: 70 }} data-testid="train-k" />
          </label>
          <label className="field">
            <span className="field-label">token budget</span>
            <input type="number" min={1000} value={form.train_tokens} onChange={(e) => num("train_tokens")(e.target.value)} style={{ width: 110 }} data-testid="train-tokens" />
          </label>
          <label className="field">
            <span className="field-label">name (optional)</span>
            <input value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} placeholder="its id" data-testid="train-name" />
          </label>
          <label title="each sequence's first position is an attention sink with massive activations in many real models; Gemma Scope leaves it out">
            <input type="checkbox" checked={form.first_position} onChange={(e) => setForm({ ...form, first_position: e.target.checked })} data-testid="train-first-position" />{" "}
            first position
          </label>
          <button type="submit" className="btn btn-primary" disabled={busy || !model || !hook || !dataset} data-testid="train-start">
            Train
          </button>
          {busy && <Spinner label="Starting" />}
        </div>
      </form>
      {error && <ErrorBox title="Cannot train this SAE" message={error} testId="train-error" />}
      {started && (
        <div data-testid="train-status">
          <p className="small">
            Training <span className="mono">{started.sae}</span> ({formatInt(form.train_tokens)} tokens): tokens, activation cache, training, held-out evaluation,
            dashboards. Cancel a job from the Overview page.
          </p>
          <ChainProgress key={started.sae} ids={started.jobs} onDone={(ok) => ok && onTrained(started.sae)} />
        </div>
      )}
    </Panel>
  );
}
