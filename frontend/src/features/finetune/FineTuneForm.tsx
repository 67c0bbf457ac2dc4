import { useState } from "react";
import { errorMessage } from "../../api/client";
import { ErrorBox, Panel, SelectField, Spinner } from "../../ui/components";
import { submitTo } from "../../ui/events";
import { usePolling } from "../../ui/hooks";
import { datasetsApi } from "../datasets/api";
import { modelsApi } from "../models/api";
import { finetuneApi, type FineTuneRequest } from "./api";

type Method = NonNullable<FineTuneRequest["method"]>;

/** Start a fine-tune of a registered model (the current one to start with) on a dataset. */
export function FineTuneForm({ parentId, onStarted }: { parentId: string | null; onStarted: (modelId: string) => void }) {
  const models = usePolling(modelsApi.models, () => null);
  const datasets = usePolling(datasetsApi.datasets, () => null);
  const [parent, setParent] = useState(parentId ?? "");
  const [datasetId, setDatasetId] = useState("");
  const [modelId, setModelId] = useState("");
  const [method, setMethod] = useState<Method>("lora");
  const [steps, setSteps] = useState(200);
  const [lr, setLr] = useState("");
  const [batch, setBatch] = useState(8);
  const [rank, setRank] = useState(8);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const modelList = models.data?.models ?? [];
  const p = modelList.some((m) => m.id === parent) ? parent : (modelList[0]?.id ?? "");
  const datasetList = datasets.data?.datasets ?? [];
  const d = datasetList.some((x) => x.id === datasetId) ? datasetId : (datasetList[0]?.id ?? "");
  const id = modelId || (p && d ? `${p}-${d}-${method}`.replace(/[^A-Za-z0-9_.-]+/g, "-").slice(0, 60) : "");

  const start = async () => {
    if (!p || !d || !id) return;
    setBusy(true);
    setError(null);
    try {
      await finetuneApi.start({
        parent: p,
        dataset_id: d,
        model_id: id,
        method,
        max_steps: steps,
        learning_rate: lr ? Number(lr) : null,
        batch_size: batch,
        lora_r: rank,
        lora_alpha: 2 * rank,
        max_length: 256,
        save_steps: 50,
        seed: 0,
      });
      setModelId("");
      onStarted(id);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Panel title="Fine-tune a model" testId="finetune-panel">
      <form onSubmit={submitTo(() => void start())} className="gen-form" data-testid="finetune-form">
        <div style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }}>
          <SelectField label="parent model" value={p} onChange={setParent} options={modelList.map((m) => m.id)} testId="finetune-parent" />
          <SelectField label="dataset" value={d} onChange={setDatasetId} options={datasetList.map((x) => x.id)} testId="finetune-dataset" />
          <SelectField
            label="method"
            value={method}
            onChange={(v) => setMethod(v as Method)}
            options={[
              { value: "lora", label: "LoRA (peft)" },
              { value: "full", label: "full fine-tuning" },
            ]}
            testId="finetune-method"
          />
          <label className="field">
            <span className="field-label">steps</span>
            <input type="number" min={1} max={100000} value={steps} onChange={(e) => setSteps(Number(e.target.value))} style={{ width: 80 }} data-testid="finetune-steps" />
          </label>
          <label className="field" title="default: 2e-4 for LoRA, 2e-5 for full fine-tuning">
            <span className="field-label">learning rate</span>
            <input value={lr} onChange={(e) => setLr(e.target.value)} placeholder="default" style={{ width: 80 }} data-testid="finetune-lr" />
          </label>
          <label className="field">
            <span className="field-label">batch</span>
            <input type="number" min={1} max={256} value={batch} onChange={(e) => setBatch(Number(e.target.value))} style={{ width: 60 }} data-testid="finetune-batch" />
          </label>
          {method === "lora" && (
            <label className="field">
              <span className="field-label">LoRA rank</span>
              <input type="number" min={1} max={512} value={rank} onChange={(e) => setRank(Number(e.target.value))} style={{ width: 60 }} data-testid="finetune-rank" />
            </label>
          )}
          <label className="field">
            <span className="field-label">new model id</span>
            <input value={id} onChange={(e) => setModelId(e.target.value)} data-testid="finetune-model-id" />
          </label>
          <button type="submit" className="btn btn-primary" disabled={busy || !p || !d || !id} data-testid="finetune-start">
            Fine-tune
          </button>
          {busy && <Spinner label="Starting" />}
        </div>
      </form>
      {error && <ErrorBox title="Cannot start this fine-tune" message={error} testId="finetune-error" />}
      <p className="muted small">
        Conversations (records with <span className="mono">messages</span>) are written with the parent&apos;s chat template and trained on the assistant&apos;s
        turns only; texts are trained on whole. The tuned model is registered under its new id with its parent, dataset and settings; LoRA adapters are
        merged into its weights.
      </p>
    </Panel>
  );
}
