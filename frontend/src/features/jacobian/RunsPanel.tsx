import { errorMessage } from "../../api/client";
import { Badge, Empty, ErrorBox, Panel } from "../../ui/components";
import { formatFixed, formatValue } from "../../ui/format";
import { runStatusTone } from "../jobs/JobsTable";
import type { JacobianRunItem } from "./api";

/** A run's settings in one line ("seed 0 · width 64 · 25 ep · lr 0.1 · none"). */
function settingsLabel(s: Record<string, unknown>): string {
  const init = s.init && s.init !== "lecun" ? ` · init ${formatValue(s.init)}` : "";
  const dtype = s.dtype === "float32" ? " · float32" : "";
  return `seed ${String(s.seed)} · width ${String(s.width)} · ${String(s.epochs)} ep · lr ${String(s.lr)} · ${String(s.control)}${dtype}${init}`;
}

/** The training-Jacobian runs with their status; a click on a finished one shows it. */
export function RunsPanel({
  runs,
  error,
  current,
  onSelect,
}: {
  runs: JacobianRunItem[];
  /** The run list could not be fetched (and none is known). */
  error: unknown;
  current: string | null;
  onSelect: (runId: string) => void;
}) {
  return (
    <Panel title="Runs" testId="jacobian-runs">
      {error ? <ErrorBox message={errorMessage(error)} /> : null}
      {runs.length === 0 ? (
        <Empty>No runs yet. The demo world&apos;s build computes the paper&apos;s setting (4,810 parameters, 625 steps; about 10 minutes on 2 CPU cores) as its last background step; in any world, a run starts below.</Empty>
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
              {runs.map((r) => {
                const s = r.summary as Record<string, number> | null | undefined;
                return (
                  <tr
                    key={r.run_id}
                    data-testid="jacobian-run-row"
                    data-status={r.status}
                    data-run-id={r.run_id}
                    className={r.run_id === current ? "active" : ""}
                    style={{ cursor: r.status === "done" ? "pointer" : "default", fontWeight: r.run_id === current ? 600 : undefined }}
                    onClick={() => r.status === "done" && onSelect(r.run_id)}
                  >
                    <td className="mono small">{r.run_id}</td>
                    <td className="small">{settingsLabel(r.settings)}</td>
                    <td>
                      <Badge tone={runStatusTone(r.status)}>{r.status}</Badge>
                      {r.status !== "done" && r.progress ? (
                        <span className="muted small" title={formatValue(r.progress.message ?? "")}>
                          {" "}
                          {r.progress.total ? `${Math.round((100 * Number(r.progress.done)) / Number(r.progress.total))}%` : ""}
                        </span>
                      ) : null}
                    </td>
                    <td className="num">{s ? formatFixed(s.sigma_1, 2) : ""}</td>
                    <td className="num">{s ? `${(100 * s.bulk_fraction).toFixed(0)}%` : ""}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </Panel>
  );
}
