import { Badge } from "../../ui/components";
import { formatInt, formatPercent } from "../../ui/format";
import type { SAE } from "./api";
import { targetsOf } from "./saeMetrics";

function DashboardState({ sae }: { sae: SAE }) {
  const st = sae.dashboards;
  if (st.state === "ready") return <Badge tone="good">dashboards ready</Badge>;
  if (st.state === "failed") return <Badge tone="bad">dashboards failed</Badge>;
  if (st.state === "building")
    return <Badge tone="info">building {st.progress != null ? formatPercent(st.progress, 0) : "…"}</Badge>;
  return <Badge tone="warn">dashboards pending</Badge>;
}

/** One card per SAE (a tab): id, hook, architecture, targets met, dashboard state. */
export function SAEPicker({ saes, selected, onSelect }: { saes: SAE[]; selected: string; onSelect: (id: string) => void }) {
  return (
    <div className="sae-picker" role="tablist" aria-label="SAEs">
      {saes.map((s) => {
        const t = targetsOf(s);
        const met = Object.values(t).filter((x) => x.met).length;
        const n = Object.keys(t).length;
        return (
          <button
            key={s.id}
            type="button"
            role="tab"
            aria-selected={s.id === selected}
            className={`sae-card${s.id === selected ? " active" : ""}`}
            onClick={() => onSelect(s.id)}
            data-testid="sae-card"
            data-sae-id={s.id}
          >
            <span className="sae-card-id mono">{s.id}</span>
            <span className="sae-card-hook mono">{s.hook_name}</span>
            <span className="sae-card-meta">
              {s.architecture} · d_sae {formatInt(s.d_sae)} · d_in {formatInt(s.d_in)}
            </span>
            <span className="sae-card-badges">
              {n > 0 && <Badge tone={met === n ? "good" : "warn"}>{`${met}/${n} targets met`}</Badge>}
              <DashboardState sae={s} />
            </span>
          </button>
        );
      })}
    </div>
  );
}
