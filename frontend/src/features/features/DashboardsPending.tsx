import { ErrorBox, Panel, Spinner } from "../../ui/components";
import type { SAE } from "./api";

/** Shown instead of the feature table while the SAE's dashboards are queued, building or failed. */
export function DashboardsPending({ sae }: { sae: SAE }) {
  const st = sae.dashboards;
  const pct = st.progress != null ? Math.round(st.progress * 100) : null;
  return (
    <Panel title="Features" testId="dashboards-status">
      <div className="not-ready">
        <div>
          {st.state === "failed" ? (
            <ErrorBox title="Building the dashboards failed" message={st.message ?? "see the job on the Overview page"} />
          ) : (
            <span className="waiting">
              <Spinner label="Waiting for dashboards" />
              {st.state === "pending" ? "Dashboards are queued." : "Building dashboards…"} {st.message && <span className="muted">{st.message}</span>}
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
