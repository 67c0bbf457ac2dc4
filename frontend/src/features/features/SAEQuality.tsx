import { Badge, Empty, Panel } from "../../ui/components";
import { formatFloat, formatInt, formatPercent } from "../../ui/format";
import { Link } from "../../ui/router";
import type { SAE } from "./api";
import { domainsOf, targetsOf } from "./saeMetrics";
import { featureUrl } from "./url";

const METRICS: { key: string; label: string; fmt: (v: number) => string; help: string }[] = [
  { key: "fvu", label: "FVU", fmt: (v) => formatFloat(v, 3), help: "fraction of variance unexplained on held-out tokens" },
  { key: "l0", label: "L0", fmt: (v) => formatFloat(v, 1), help: "mean number of active features per token" },
  { key: "dead_fraction", label: "Dead", fmt: (v) => formatPercent(v, 1), help: "features that never fire on held-out tokens" },
  { key: "dense_fraction", label: "Dense", fmt: (v) => formatPercent(v, 1), help: "features firing on more than 10% of tokens" },
  {
    key: "ce_loss_recovered",
    label: "CE loss recovered",
    fmt: (v) => formatPercent(v, 1),
    help: "loss with the reconstruction spliced in, relative to zero-ablation",
  },
  { key: "planted_domains_detected", label: "Domains detected", fmt: (v) => formatInt(v), help: "planted domains with a feature of AUROC ≥ 0.95" },
];


/** The selected SAE's quality metrics against their targets, and its best feature per planted domain. */
export function SAEQuality({ sae }: { sae: SAE }) {
  const m = sae.metrics as Record<string, unknown>;
  const targets = targetsOf(sae);
  const domains = domainsOf(sae);
  if (Object.keys(m).length === 0) {
    return (
      <Panel title="Quality" testId="sae-quality">
        <Empty>Not evaluated yet (run `loupe eval saes`).</Empty>
      </Panel>
    );
  }
  return (
    <Panel
      title="Quality"
      testId="sae-quality"
      actions={typeof m.eval_tokens === "number" ? <span className="muted small">on {formatInt(m.eval_tokens)} held-out tokens</span> : null}
    >
      <dl className="metric-grid">
        {METRICS.map(({ key, label, fmt, help }) => {
          const v = m[key];
          const t = targets[key];
          return (
            <div className="metric" key={key} data-testid={`sae-metric-${key}`} title={help}>
              <dt>{label}</dt>
              <dd>
                {typeof v === "number" ? fmt(v) : "—"}
              </dd>
              <div className="metric-target">
                {t ? (
                  <>
                    <span className="muted small mono">target {t.target}</span>
                    <Badge tone={t.met ? "good" : "bad"} testId={t.met ? "target-met" : "target-unmet"}>
                      {t.met ? "met" : "not met"}
                    </Badge>
                  </>
                ) : (
                  <span className="muted small">no target</span>
                )}
              </div>
            </div>
          );
        })}
      </dl>
      {domains.length > 0 && (
        <details className="auroc-details" open>
          <summary>Best single feature per planted domain (AUROC as a detector of the domain’s tokens)</summary>
          <div className="table-scroll">
            <table className="table auroc-table" data-testid="domain-auroc-table">
              <thead>
                <tr>
                  <th>domain</th>
                  <th>best feature</th>
                  <th className="num">AUROC</th>
                  <th className="bar-col" aria-label="AUROC bar" />
                  <th />
                </tr>
              </thead>
              <tbody>
                {domains.map((d) => (
                  <tr key={d.name} data-testid="domain-auroc-row" data-domain={d.name}>
                    <td className="mono">{d.name}</td>
                    <td>
                      <Link to={featureUrl(sae.id, d.feature)} data-testid="domain-feature-link">
                        #{d.feature}
                      </Link>
                    </td>
                    <td className="num">{d.auroc.toFixed(3)}</td>
                    <td className="bar-col">
                      <div className="mini-bar">
                        <div style={{ width: `${Math.max(0, (d.auroc - 0.5) * 200).toFixed(1)}%` }} className={d.auroc >= 0.95 ? "good" : ""} />
                      </div>
                    </td>
                    <td>{d.auroc >= 0.95 ? <Badge tone="good">detected</Badge> : null}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </details>
      )}
    </Panel>
  );
}
