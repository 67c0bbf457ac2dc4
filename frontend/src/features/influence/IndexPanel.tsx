// The influence indexes of the current model (one per dataset and tracked layers) and a form that builds
// one: "build the index of this model on dataset X" as a chain of jobs, with its progress.
import { useState } from "react";
import { errorMessage } from "../../api/client";
import { Badge, ErrorBox, Panel, SelectField, Spinner, type Tone } from "../../ui/components";
import { submitTo } from "../../ui/events";
import { usePolling, type Polled } from "../../ui/hooks";
import { datasetsApi } from "../datasets/api";
import type { ModelInfo } from "../models/api";
import { influenceApi, type IndexInfo, type IndexList, type IndexRequest } from "./api";

type Target = NonNullable<IndexRequest["target"]>;

const TONE: Record<IndexInfo["status"], Tone> = { ready: "good", building: "info", failed: "bad", "not built": "neutral" };

export function indexKey(x: { dataset_id: string; target: string }): string {
  return `${x.dataset_id}/${x.target}`;
}

function IndexRow({ ix }: { ix: IndexInfo }) {
  const job = ix.job;
  const pct = job && job.total ? Math.round((100 * job.done) / job.total) : null;
  return (
    <tr data-testid={`influence-index-${ix.dataset_id}-${ix.target}`}>
      <td className="mono">{ix.dataset_id}</td>
      <td>{ix.target === "lora" ? "LoRA factors" : "MLP linears"}</td>
      <td>
        <Badge tone={TONE[ix.status]} testId="influence-index-status">
          {ix.status}
        </Badge>
      </td>
      <td className="small">
        {ix.ready && (
          <span className="muted">
            {ix.n_train?.toLocaleString()} sequences, {ix.modules} layers, {ix.dim?.toLocaleString()} coordinates
          </span>
        )}
        {job && (
          <span data-testid="influence-index-job">
            job {job.id} ({job.name}): {job.status} {pct !== null ? `${pct}%` : ""} {job.message}
            {job.error ? ` — ${job.error}` : ""}
          </span>
        )}
      </td>
    </tr>
  );
}

/** The current model's indexes and the build form (dataset: the model's fine-tuning dataset first). */
export function IndexPanel({
  model,
  indexes,
  onBuilt,
}: {
  model: ModelInfo | undefined;
  indexes: Polled<IndexList>;
  onBuilt: () => void;
}) {
  const datasets = usePolling(datasetsApi.datasets, () => null);
  const lineage = (model?.lineage ?? null) as { dataset_id?: string; method?: string } | null;
  const [datasetId, setDatasetId] = useState("");
  const [target, setTarget] = useState<Target>(lineage?.method === "lora" ? "lora" : "mlp");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const list = datasets.data?.datasets ?? [];
  const preferred = lineage?.dataset_id && list.some((x) => x.id === lineage.dataset_id) ? lineage.dataset_id : (list[0]?.id ?? "");
  const d = list.some((x) => x.id === datasetId) ? datasetId : preferred;
  const mine = (indexes.data?.indexes ?? []).filter((x) => x.model_id === model?.id);
  // an index that is built or queued (the world's own build queues its index up front) is not built twice
  const existing = mine.find((x) => x.dataset_id === d && x.target === target);
  const taken = existing?.status === "ready" || existing?.status === "building";

  const build = async () => {
    if (!model || !d) return;
    setBusy(true);
    setError(null);
    try {
      await influenceApi.build({ model_id: model.id, dataset_id: d, target });
      onBuilt();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Panel title={<>Influence indexes of <span className="mono">{model?.id ?? "…"}</span></>} testId="influence-indexes">
      {mine.length > 0 ? (
        <table className="table">
          <thead>
            <tr>
              <th>dataset</th>
              <th>tracks</th>
              <th>status</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {mine.map((ix) => (
              <IndexRow key={indexKey(ix)} ix={ix} />
            ))}
          </tbody>
        </table>
      ) : (
        <p className="muted small" data-testid="influence-no-index">
          No index of this model yet: influence needs the data the model was trained on. Build one on its
          fine-tuning dataset.
        </p>
      )}
      <form className="gen-form" onSubmit={submitTo(() => void build())} data-testid="influence-build-form">
        <div style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }}>
          <SelectField
            label="dataset"
            value={d}
            onChange={setDatasetId}
            options={list.map((x) => ({ value: x.id, label: x.id + (x.id === lineage?.dataset_id ? " (its fine-tuning data)" : "") }))}
            testId="influence-build-dataset"
          />
          <SelectField
            label="EK-FAC on"
            value={target}
            onChange={(v) => setTarget(v as Target)}
            options={[
              { value: "mlp", label: "the MLP linear layers" },
              { value: "lora", label: "the LoRA factors (a LoRA fine-tune)", disabled: lineage?.method !== "lora" },
            ]}
            testId="influence-build-target"
          />
          <button type="submit" className="btn" disabled={busy || !model || !d || taken} data-testid="influence-build">
            {existing?.status === "ready"
              ? `Built on ${d}`
              : existing?.status === "building"
                ? `Building on ${d}…`
                : `Build index for this model on ${d || "…"}`}
          </button>
          {busy && <Spinner />}
        </div>
      </form>
      {error && <ErrorBox message={error} testId="influence-build-error" />}
    </Panel>
  );
}
