import { Badge, Empty, Panel } from "../../ui/components";
import { formatFixed } from "../../ui/format";
import { steeringApi, type CandidateRow, type VectorDetail } from "./api";

function CandidateTable({ rows }: { rows: CandidateRow[] }) {
  return (
    <div className="table-scroll">
      <table className="table compact" data-testid="candidate-table">
        <thead>
          <tr>
            <th>hook</th>
            <th className="num">layer</th>
            <th className="num">position</th>
            <th className="num">‖r‖</th>
            <th className="num">bypass</th>
            <th className="num">induce</th>
            <th className="num">KL</th>
            <th>filtered out because</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={`${r.hook}:${r.position}`} className={r.selected ? "selected-row" : ""} data-testid={r.selected ? "candidate-selected" : undefined}>
              <td className="mono">
                {r.hook} {r.selected && <Badge tone="good">selected</Badge>}
              </td>
              <td className="num">{r.layer}</td>
              <td className="num">{r.position}</td>
              <td className="num">{formatFixed(r.norm)}</td>
              <td className="num">{formatFixed(r.bypass_score)}</td>
              <td className="num">{formatFixed(r.induce_score)}</td>
              <td className="num">{formatFixed(r.kl)}</td>
              <td className="muted small">{r.reasons.join("; ")}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** A direction's candidate table (Arditi et al.'s selection) and its export link. */
export function VectorPanel({ detail }: { detail: VectorDetail }) {
  return (
    <Panel
      title={`Direction “${detail.name}”: candidates`}
      actions={
        <a className="btn btn-small btn-ghost" href={steeringApi.exportUrl(detail.id)} data-testid="vector-export">
          Export .safetensors
        </a>
      }
      testId="vector-panel"
    >
      <p className="muted small">
        Difference of means at each (hook, post-instruction position); filters as in Arditi et al.: KL ≤ 0.1 on harmless
        prompts under ablation, layer &lt; 80% of depth, induce score &gt; 0; then
        {detail.scores.selection_rule === "bypass"
          ? " the lowest bypass score (the paper's rule)."
          : " the lowest bypass − induce score (the direction must both remove and add refusal)."}
        {detail.scores.fallback ? " No candidate passed every filter; the selected one is the best fallback." : ""}
      </p>
      {detail.candidates.rows.length ? <CandidateTable rows={detail.candidates.rows} /> : <Empty>An imported vector has no candidate table.</Empty>}
    </Panel>
  );
}
