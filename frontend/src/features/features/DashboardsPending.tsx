import { useState } from "react";
import { errorMessage } from "../../api/client";
import { ErrorBox, Panel, Spinner } from "../../ui/components";
import { saesApi, type SAE } from "./api";

/** Shown instead of the feature table while the SAE's dashboards are queued, building or failed; a
 * failed one offers Retry (its dashboard steps again) and Delete. */
export function DashboardsPending({ sae, onChanged, onDeleted }: { sae: SAE; onChanged: () => void; onDeleted: () => void }) {
  const st = sae.dashboards;
  const pct = st.progress != null ? Math.round(st.progress * 100) : null;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const act = async (what: () => Promise<unknown>, then: () => void) => {
    setBusy(true);
    setError(null);
    try {
      await what();
      then();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Panel title="Features" testId="dashboards-status">
      <div className="not-ready">
        <div>
          {st.state === "failed" ? (
            <>
              <ErrorBox title="Building the dashboards failed" message={st.message ?? "see the job on the Overview page"} testId="dashboards-error" />
              <div style={{ display: "flex", gap: 10, marginTop: 8 }}>
                <button type="button" className="btn btn-primary" disabled={busy} onClick={() => void act(() => saesApi.retryDashboards(sae.id), onChanged)} data-testid="dashboards-retry">
                  Retry
                </button>
                <button type="button" className="btn btn-ghost" disabled={busy} onClick={() => void act(() => saesApi.remove(sae.id), onDeleted)} data-testid="sae-delete">
                  Delete this SAE
                </button>
              </div>
              {error && <ErrorBox title="That did not work" message={error} testId="dashboards-action-error" />}
            </>
          ) : (
            <span className="waiting">
              <Spinner label="Waiting for dashboards" />
              {st.state === "pending" ? "Dashboards are queued." : "Building…"} {st.job_name && <span className="mono small">{st.job_name}</span>}{" "}
              {st.message && <span className="muted">{st.message}</span>}
            </span>
          )}
        </div>
        {st.state === "building" && (
          <div
            className={`progress${pct === null ? " progress-indeterminate" : ""}`}
            role="progressbar"
            aria-valuemin={0}
            aria-valuemax={100}
            aria-valuenow={pct ?? undefined}
            data-testid="dashboards-progress"
          >
            <div className="progress-fill" style={pct === null ? undefined : { width: `${pct}%` }} />
          </div>
        )}
        <p className="hint">This page refreshes by itself; the table appears when the dashboards are built.</p>
      </div>
    </Panel>
  );
}
