import { useEffect } from "react";
import { errorMessage } from "../../api/client";
import { Badge, Empty, ErrorBox, Panel, Spinner } from "../../ui/components";
import { formatFixed } from "../../ui/format";
import { usePolling } from "../../ui/hooks";
import { isActiveStatus, runStatusTone } from "../jobs/JobsTable";
import { useJobRun } from "../jobs/useJobRun";
import { Plot, type Figure } from "../../ui/Plot";
import { finetuneApi, type FineTuneRun } from "./api";


/** One run's loss curve and outcome, polled while it trains. */
function RunDetail({ modelId }: { modelId: string }) {
  const { run, error, cancel } = useJobRun(
    (signal) => finetuneApi.run(modelId, signal),
    (d) => d.job_id,
    (id) => finetuneApi.cancel(id),
  );
  const r = run.data;
  if (!r) return run.error ? <ErrorBox message={errorMessage(run.error)} /> : <Spinner label="Loading the run" />;
  return (
    <Panel
      title={
        <>
          <span className="mono">{r.model_id}</span> <span className="muted">from</span> <span className="mono">{r.parent}</span>
        </>
      }
      actions={
        isActiveStatus(r.status) ? (
          <button type="button" className="btn btn-small" onClick={() => void cancel()} data-testid="finetune-cancel">
            Cancel
          </button>
        ) : undefined
      }
      testId="finetune-run"
    >
      <p className="small" data-testid="finetune-run-status" data-status={r.status}>
        <Badge tone={runStatusTone(r.status)}>{r.status}</Badge> {r.message !== r.status && r.message}
        {r.error && <span className="text-bad"> · {r.error.split("\n")[0]}</span>}
      </p>
      {r.loss.length > 0 ? <Plot figure={r.figure as Figure} height={280} testId="finetune-loss-plot" /> : <Empty>No loss logged yet.</Empty>}
      <p className="muted small" data-testid="finetune-run-summary">
        {String(r.config.method)} on <span className="mono">{r.dataset_id}</span>, {r.loss.length} of {String(r.config.max_steps)} steps
        {r.heldout_loss_before != null && <>; held-out loss {formatFixed(r.heldout_loss_before)}</>}
        {r.heldout_loss_after != null && <> → {formatFixed(r.heldout_loss_after)}</>}
        {r.registered && <>; registered as a model (pick it in the sidebar)</>}
      </p>
      {error && <ErrorBox title="Cannot cancel" message={error} />}
    </Panel>
  );
}

/** Every fine-tune, newest first; the selected one's curve below. */
export function FineTuneRuns({ selected, onSelect }: { selected: string | null; onSelect: (id: string) => void }) {
  const runs = usePolling(finetuneApi.runs, (d, e) => (e ? 5000 : d?.runs.some((r) => isActiveStatus(r.status)) ? 2000 : 15000));
  const { refresh } = runs;
  useEffect(() => refresh(), [selected, refresh]); // a run just started: list it now
  const list: FineTuneRun[] = runs.data?.runs ?? [];
  const shown = selected ?? list[0]?.model_id ?? null;
  return (
    <>
      <Panel title="Fine-tunes" testId="finetune-runs">
        {list.length === 0 ? (
          <Empty>No fine-tunes yet.</Empty>
        ) : (
          <table className="table compact">
            <thead>
              <tr>
                <th>model</th>
                <th>parent</th>
                <th>dataset</th>
                <th>method</th>
                <th>status</th>
                <th className="num">last loss</th>
              </tr>
            </thead>
            <tbody>
              {list.map((r) => (
                <tr key={r.job_id} className={r.model_id === shown ? "selected" : undefined} onClick={() => onSelect(r.model_id)} style={{ cursor: "pointer" }} data-testid="finetune-row">
                  <td className="mono">{r.model_id}</td>
                  <td className="mono">{r.parent}</td>
                  <td className="mono">{r.dataset_id}</td>
                  <td>{String(r.config.method)}</td>
                  <td>
                    <Badge tone={runStatusTone(r.status)}>{r.status}</Badge>
                  </td>
                  <td className="num">{r.loss.length ? formatFixed(r.loss[r.loss.length - 1].loss) : "–"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Panel>
      {shown && <RunDetail key={shown} modelId={shown} />}
    </>
  );
}
