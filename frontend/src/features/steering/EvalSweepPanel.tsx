import { useEffect, useState } from "react";
import { datasetsApi, type Dataset } from "../datasets/api";
import { Empty, ErrorBox, Panel, Spinner } from "../../ui/components";
import { formatFixed, formatPercent } from "../../ui/format";
import { Plot, type Figure } from "../../ui/Plot";
import type { Evaluation } from "./api";
import { useEvalSweep } from "./useEvalSweep";

function SweepTable({ evaluation }: { evaluation: Evaluation }) {
  return (
    <div className="table-scroll">
      <table className="table compact" data-testid="steer-eval-table">
        <thead>
          <tr>
            <th>method</th>
            <th className="num">alpha</th>
            <th className="num">refusal harmful</th>
            <th className="num">refusal harmless</th>
            <th className="num">gap</th>
            <th className="num">KL harmless</th>
          </tr>
        </thead>
        <tbody>
          {evaluation.rows.map((r) => (
            <tr key={`${r.method}:${r.alpha}`}>
              <td>{r.method}</td>
              <td className="num">{r.alpha}</td>
              <td className="num">{formatPercent(r.refusal_harmful)}</td>
              <td className="num">{formatPercent(r.refusal_harmless)}</td>
              <td className="num">{formatPercent(r.gap)}</td>
              <td className="num">{formatFixed(r.kl_harmless)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Datasets with held-out instructions of both labels: the sweep's prompt sources. */
function useLabelledDatasets(): Dataset[] {
  const [datasets, setDatasets] = useState<Dataset[]>([]);
  useEffect(() => {
    const c = new AbortController();
    datasetsApi
      .datasets(c.signal)
      .then((l) => setDatasets(l.datasets.filter((d) => Number(d.counts.harmful ?? 0) > 0 && Number(d.counts.harmless ?? 0) > 0)))
      .catch(() => undefined);
    return () => c.abort();
  }, []);
  return datasets;
}

/** The evaluation sweep of a direction: refusal rate vs alpha on harmful and harmless prompts. */
export function EvalSweepPanel({ vectorId }: { vectorId: string }) {
  const { evaluation, job, error, limit, setLimit, datasetId, setDatasetId, baseline, setBaseline, evaluate } = useEvalSweep(vectorId);
  const datasets = useLabelledDatasets();
  return (
    <Panel
      title="Evaluation sweep"
      actions={
        <>
          <label className="inline-field small">
            prompts from{" "}
            <select value={datasetId} onChange={(e) => setDatasetId(e.target.value)} data-testid="steer-eval-dataset">
              <option value="">the world&apos;s instructions</option>
              {datasets.map((d) => (
                <option key={d.id} value={d.id}>
                  {d.name} ({String(d.counts.harmful)} harmful, {String(d.counts.harmless)} harmless)
                </option>
              ))}
            </select>
          </label>
          <label className="inline-field small">
            prompts per set{" "}
            <input type="number" min={1} max={400} value={limit} onChange={(e) => setLimit(Number(e.target.value))} data-testid="steer-eval-limit" />
          </label>
          <label className="inline-field small" title="a system message asking for refusal or compliance, no steering (AxBench: prompting often beats steering)">
            <input type="checkbox" checked={baseline} onChange={(e) => setBaseline(e.target.checked)} data-testid="steer-eval-baseline" /> prompting baseline
          </label>
          <button type="button" className="btn btn-small btn-primary" disabled={!!job} onClick={() => void evaluate()} data-testid="steer-evaluate">
            {job ? "Running…" : "Run sweep"}
          </button>
        </>
      }
      testId="steer-eval-panel"
    >
      {job && (
        <div className="waiting" data-testid="steer-eval-progress">
          <Spinner /> job {job.id}: {job.message}
        </div>
      )}
      {error && <ErrorBox title="Evaluation failed" message={error} />}
      {evaluation ? (
        <>
          <Plot figure={evaluation.figure as Figure} height={320} testId="steer-plot" />
          <SweepTable evaluation={evaluation} />
          <p className="muted small">
            {evaluation.n_harmful} harmful and {evaluation.n_harmless} harmless prompts, greedy, {evaluation.max_new_tokens} tokens;{" "}
            {evaluation.seconds}s.
          </p>
        </>
      ) : (
        !job && <Empty>No sweep yet for this direction.</Empty>
      )}
    </Panel>
  );
}
