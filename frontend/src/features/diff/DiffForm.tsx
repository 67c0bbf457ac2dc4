import { useState } from "react";
import { errorMessage } from "../../api/client";
import { ErrorBox, Panel, SelectField, Spinner } from "../../ui/components";
import { submitTo } from "../../ui/events";
import { usePolling } from "../../ui/hooks";
import { datasetsApi } from "../datasets/api";
import { saesApi } from "../features/api";
import { modelsApi } from "../models/api";
import { diffApi } from "./api";

/** Pick a tuned model (its parent comes from its lineage), a dataset and an SAE of the parent; start the diff. */
export function DiffForm({ modelId, onStarted }: { modelId: string | null; onStarted: (diffId: string) => void }) {
  const models = usePolling(modelsApi.models, () => null);
  const datasets = usePolling(datasetsApi.datasets, () => null);
  const saes = usePolling((s) => saesApi.saes(null, s), () => null);
  const [child, setChild] = useState(modelId ?? "");
  const [parentChoice, setParentChoice] = useState<string | null>(null);
  const [datasetChoice, setDatasetChoice] = useState<string | null>(null);
  const [saeChoice, setSaeChoice] = useState<string | null>(null);
  const [nTokens, setNTokens] = useState(4096);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const list = models.data?.models ?? [];
  const tuned = list.filter((m) => m.parent);
  const c = tuned.some((m) => m.id === child) ? child : (tuned[0]?.id ?? "");
  const model = list.find((m) => m.id === c);
  const lineageParent = model?.parent ?? "";
  const parent = parentChoice ?? lineageParent;
  const lineageDataset = typeof model?.lineage?.dataset_id === "string" ? model.lineage.dataset_id : "";
  const datasetList = datasets.data?.datasets ?? [];
  const d = datasetChoice ?? (datasetList.some((x) => x.id === lineageDataset) ? lineageDataset : (datasetList[0]?.id ?? ""));
  const parentSaes = (saes.data?.saes ?? []).filter((s) => s.model_id === parent);
  const sae = saeChoice ?? parentSaes[0]?.id ?? "";

  const start = async () => {
    if (!c || !d) return;
    setBusy(true);
    setError(null);
    try {
      const out = await diffApi.start({
        model_id: c,
        parent_id: parent || null,
        dataset_id: d,
        sae_id: sae || null,
        split: "train",
        n_tokens: nTokens,
        n_instructions: 64,
        layer_stride: 1,
        batch_size: 8,
        top_k: 50,
      });
      onStarted(out.diff_id);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Panel title="Compare a tuned model with its parent" testId="diff-panel">
      {tuned.length === 0 && models.data && (
        <p className="muted small" data-testid="diff-no-tuned">
          No model here records a parent yet: fine-tune one on the Fine-tune page first.
        </p>
      )}
      <form onSubmit={submitTo(() => void start())} className="gen-form" data-testid="diff-form">
        <div style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }}>
          <SelectField
            label="tuned model"
            value={c}
            onChange={(v) => {
              setChild(v);
              setParentChoice(null);
              setDatasetChoice(null);
              setSaeChoice(null);
            }}
            options={tuned.map((m) => m.id)}
            testId="diff-model"
          />
          <SelectField
            label="parent"
            title="from the tuned model's lineage"
            value={parent}
            onChange={(v) => {
              setParentChoice(v);
              setSaeChoice(null);
            }}
            options={list.filter((m) => m.id !== c).map((m) => ({ value: m.id, label: m.id + (m.id === lineageParent ? " (lineage)" : "") }))}
            testId="diff-parent"
          />
          <SelectField
            label="dataset"
            value={d}
            onChange={setDatasetChoice}
            options={datasetList.map((x) => ({ value: x.id, label: x.id + (x.id === lineageDataset ? " (tuned on)" : "") }))}
            testId="diff-dataset"
          />
          <SelectField
            label="SAE of the parent"
            title="an SAE trained on the parent; its features are compared on both models"
            value={sae}
            onChange={setSaeChoice}
            options={[{ value: "", label: "none" }, ...parentSaes.map((s) => ({ value: s.id, label: `${s.id} (${s.hook_name})` }))]}
            testId="diff-sae"
          />
          <label className="field">
            <span className="field-label">tokens</span>
            <input type="number" min={16} max={200000} value={nTokens} onChange={(e) => setNTokens(Number(e.target.value))} style={{ width: 90 }} data-testid="diff-tokens" />
          </label>
          <button type="submit" className="btn btn-primary" disabled={busy || !c || !d || !parent} data-testid="diff-start">
            Compare
          </button>
          {busy && <Spinner label="Starting" />}
        </div>
      </form>
      {error && <ErrorBox title="Cannot start this diff" message={error} testId="diff-error" />}
      <p className="muted small">
        Weights: each block&apos;s relative change ‖ΔW‖/‖W‖. Activations: both models on the same tokens of the dataset (conversations in the parent&apos;s
        chat template), the residual stream after each block. Features: the SAE&apos;s features on both models&apos; activations. Refusal: the
        difference-of-means direction of each model from the dataset&apos;s harmful and harmless instructions, where it labels them.
      </p>
    </Panel>
  );
}
