import { Panel } from "../../../ui/components";
import { formatFloat, formatPercent } from "../../../ui/format";
import type { Dashboard } from "../api";
import { formatDensity, LogDensityBar } from "../density";
import { LabelEditor } from "./LabelEditor";

/** The label editor and the feature's statistics. */
export function FeatureStats({ d, onLabelSaved }: { d: Dashboard; onLabelSaved: (label: string | null) => void }) {
  return (
    <Panel testId="feature-summary">
      <LabelEditor key={`${d.sae_id}/${d.index}`} d={d} onSaved={onLabelSaved} />
      <dl className="metric-grid feature-stats">
        <div className="metric" data-testid="stat-density">
          <dt>density</dt>
          <dd>{formatDensity(d.density)}</dd>
          <LogDensityBar density={d.density} />
        </div>
        <div className="metric" data-testid="stat-max">
          <dt>max activation</dt>
          <dd>{formatFloat(d.max_activation, 3)}</dd>
        </div>
        <div className="metric" data-testid="stat-mean">
          <dt>mean activation (when active)</dt>
          <dd>{formatFloat(d.mean_activation, 3)}</dd>
        </div>
        <div className="metric" data-testid="stat-capacity" title="Scherlis et al.: (W_i·W_i)² / Σ_j (W_i·W_j)², 1 = a dimension of its own">
          <dt>capacity</dt>
          <dd>{formatFloat(d.capacity, 3)}</dd>
        </div>
        <div className="metric" data-testid="stat-domain">
          <dt>top domain</dt>
          <dd>
            {d.top_domain ?? "—"} {d.top_domain_share != null && <span className="muted small">{formatPercent(d.top_domain_share, 0)}</span>}
          </dd>
        </div>
      </dl>
    </Panel>
  );
}
