import { useEffect, useState } from "react";
import { errorMessage } from "../../api/client";
import { Badge, Empty, ErrorBox, Panel, Spinner } from "../../ui/components";
import { formatFixed, formatInt, formatPercent } from "../../ui/format";
import { usePolling } from "../../ui/hooks";
import { isActiveStatus, runStatusTone } from "../jobs/JobsTable";
import { useJobRun } from "../jobs/useJobRun";
import { Plot, type Figure } from "../../ui/Plot";
import { Link } from "../../ui/router";
import { diffApi, type DiffResult, type DiffSummary } from "./api";

const SHOWN = 15; // features in the table before "show all"
const RANKINGS = [
  { key: "delta_mean", label: "|Δ mean activation|" },
  { key: "standardized", label: "|standardized Δ| (Cohen's d)" },
  { key: "delta_freq", label: "|Δ firing frequency|" },
];

function text(x: unknown): string {
  return typeof x === "string" ? x : "";
}

function signed(x: number, digits = 3) {
  return `${x > 0 ? "+" : ""}${formatFixed(x, digits)}`;
}

/** The SAE features whose activation changed most, each linking to its page. */
function FeatureTable({ features }: { features: DiffResult["features"] }) {
  const [by, setBy] = useState("delta_mean");
  const [all, setAll] = useState(false);
  if (features.skipped || !features.top || !features.sae_id) return <Empty testId="diff-features-skipped">No feature comparison: {features.skipped}</Empty>;
  const saeId = features.sae_id;
  const ranked = features.top[by] ?? [];
  const rows = all ? ranked : ranked.slice(0, SHOWN);
  return (
    <>
      <p className="muted small">
        SAE <span className="mono">{saeId}</span> on <span className="mono">{features.hook_name}</span>, {formatInt(features.n_tokens)} tokens:{" "}
        {formatInt(features.n_changed)} of {formatInt(features.d_sae)} features changed their mean activation. Rank by{" "}
        <select value={by} onChange={(e) => setBy(e.target.value)} data-testid="diff-rank">
          {RANKINGS.map((r) => (
            <option key={r.key} value={r.key}>
              {r.label}
            </option>
          ))}
        </select>
      </p>
      {rows.length === 0 ? (
        <Empty testId="diff-features-none">No feature changed.</Empty>
      ) : (
        <div className="table-scroll">
          <table className="table compact" data-testid="diff-features">
            <thead>
              <tr>
                <th>feature</th>
                <th>label</th>
                <th className="num">mean parent</th>
                <th className="num">mean child</th>
                <th className="num">Δ mean</th>
                <th className="num">fires parent</th>
                <th className="num">fires child</th>
                <th className="num">Cohen&apos;s d</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((f) => (
                <tr key={f.index} data-testid="diff-feature-row">
                  <td className="mono">
                    <Link to={`/features/${encodeURIComponent(saeId)}/${f.index}`}>#{f.index}</Link>
                  </td>
                  <td>{f.label ?? <span className="muted">–</span>}</td>
                  <td className="num">{formatFixed(f.mean_parent)}</td>
                  <td className="num">{formatFixed(f.mean_child)}</td>
                  <td className={`num ${f.delta_mean > 0 ? "text-good" : "text-bad"}`}>{signed(f.delta_mean)}</td>
                  <td className="num">{formatPercent(f.freq_parent)}</td>
                  <td className="num">{formatPercent(f.freq_child)}</td>
                  <td className="num">{signed(f.standardized, 2)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {ranked.length > SHOWN && (
            <p>
              <button type="button" className="btn btn-small" onClick={() => setAll(!all)} data-testid="diff-features-more">
                {all ? `Show the top ${SHOWN}` : `Show all ${ranked.length}`}
              </button>
            </p>
          )}
        </div>
      )}
    </>
  );
}

/** One diff: progress while it runs, then its plots and the feature table. */
function DiffDetail({ diffId }: { diffId: string }) {
  const {
    run: diff,
    error,
    cancel,
  } = useJobRun(
    (signal) => diffApi.diff(diffId, signal),
    (d) => d.job_id,
    (id) => diffApi.cancel(id),
  );
  const d = diff.data;
  if (!d) return diff.error ? <ErrorBox message={errorMessage(diff.error)} /> : <Spinner label="Loading the diff" />;
  const p = d.params ?? {};
  const r = d.result;
  const figs = d.figures ?? {};
  const pct = d.progress?.total ? (100 * d.progress.done) / d.progress.total : null;
  return (
    <Panel
      title={
        <>
          <span className="mono">{text(p.model_id)}</span> <span className="muted">against</span> <span className="mono">{text(p.parent_id)}</span>{" "}
          <span className="muted">on</span> <span className="mono">{text(p.dataset_id)}</span>
        </>
      }
      actions={
        isActiveStatus(d.status) && d.job_id != null ? (
          <button type="button" className="btn btn-small" onClick={() => void cancel()} data-testid="diff-cancel">
            Cancel
          </button>
        ) : undefined
      }
      testId="diff-detail"
    >
      <p className="small" data-testid="diff-status" data-status={d.status}>
        <Badge tone={runStatusTone(d.status)}>{d.status}</Badge> {isActiveStatus(d.status) && d.progress?.message}
        {pct !== null && isActiveStatus(d.status) && <> ({pct.toFixed(0)}%)</>}
        {d.error && <span className="text-bad"> · {d.error.split("\n")[0]}</span>}
        {r?.seconds && Object.keys(r.seconds).length > 0 && (
          <span className="muted">
            {" "}
            computed in {Object.entries(r.seconds)
              .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
              .join(", ")}
          </span>
        )}
      </p>
      {error && <ErrorBox title="Cannot cancel" message={error} />}
      {r && (
        <>
          <h3>Weights: relative change per block</h3>
          <Plot figure={figs.weights as Figure} height={260} testId="diff-weights-plot" />
          <p className="muted small" data-testid="diff-top-param">
            Most changed tensor: <span className="mono">{r.weights.params[0]?.name}</span> ({formatFixed(r.weights.params[0]?.relative ?? 0, 4)} of its norm).
          </p>
          <h3>Activations: the residual stream after each block</h3>
          <Plot figure={figs.activations as Figure} height={260} testId="diff-activations-plot" />
          <p className="muted small">
            {formatInt(r.activations.n_tokens)} tokens of {formatInt(r.activations.n_sequences)} {r.activations.split} sequences (each sequence&apos;s first
            position, an attention sink, left out).
          </p>
          <h3>SAE features whose activation changed most</h3>
          <FeatureTable features={r.features} />
          <h3>Refusal direction: cosine between the parent&apos;s and the child&apos;s</h3>
          {r.refusal.skipped ? (
            <Empty testId="diff-refusal-skipped">Not computed: {r.refusal.skipped}</Empty>
          ) : (
            <>
              <Plot figure={figs.refusal as Figure} height={260} testId="diff-refusal-plot" />
              <p className="muted small">
                Difference of means between {r.refusal.n_harmful} harmful and {r.refusal.n_harmless} harmless train instructions at each layer and
                post-instruction position (Arditi et al. 2024), the same prompts through both models
                {r.refusal.massive_dims?.length ? `; ${r.refusal.massive_dims.length} massive dimensions left out` : ""}
                {r.refusal.layers?.some((l) => l.cosine.some((x) => x === null)) && "; no point where a direction is zero (e.g. at the first block's input, the embeddings of the same post-instruction tokens)"}.
              </p>
            </>
          )}
        </>
      )}
    </Panel>
  );
}

/** Every diff, newest first; the selected one below. */
export function DiffRuns({ selected, onSelect }: { selected: string | null; onSelect: (id: string) => void }) {
  const diffs = usePolling(diffApi.diffs, (d, e) => (e ? 5000 : d?.diffs.some((x) => isActiveStatus(x.status)) ? 2000 : 15000));
  const { refresh } = diffs;
  useEffect(() => refresh(), [selected, refresh]);
  const list: DiffSummary[] = diffs.data?.diffs ?? [];
  const shown = selected ?? list[0]?.diff_id ?? null;
  return (
    <>
      <Panel title="Diffs" testId="diff-runs">
        {list.length === 0 ? (
          <Empty>No diffs yet.</Empty>
        ) : (
          <table className="table compact">
            <thead>
              <tr>
                <th>model</th>
                <th>parent</th>
                <th>dataset</th>
                <th>SAE</th>
                <th>status</th>
              </tr>
            </thead>
            <tbody>
              {list.map((x) => (
                <tr key={x.diff_id} className={x.diff_id === shown ? "selected" : undefined} onClick={() => onSelect(x.diff_id)} style={{ cursor: "pointer" }} data-testid="diff-row">
                  <td className="mono">{x.model_id}</td>
                  <td className="mono">{x.parent_id}</td>
                  <td className="mono">{x.dataset_id}</td>
                  <td className="mono">{x.sae_id ?? "–"}</td>
                  <td>
                    <Badge tone={runStatusTone(x.status)}>{x.status}</Badge>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Panel>
      {shown && <DiffDetail key={shown} diffId={shown} />}
    </>
  );
}
