import { errorMessage } from "../../api/client";
import { Badge, Empty, Panel } from "../../ui/components";
import { formatFixed } from "../../ui/format";
import { steeringApi, type CandidateRow, type VectorDetail } from "./api";

interface RefusalToken {
  id: number;
  token: string;
  prefix: boolean;
  own_refusals: number;
}

interface Massive {
  dims: number[];
  criterion?: string;
  peaks?: Record<string, { hook: string; peak: number; ratio_to_median: number }>;
}

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
            <th className="num" title="share of ‖μ⁺ − μ⁻‖² on the massive dimensions, left out of r">massive</th>
            <th className="num">bypass</th>
            <th className="num">induce</th>
            <th className="num">KL</th>
            <th>filtered out because</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr
              key={`${r.hook}:${r.position}`}
              className={r.selected || r.kept ? "selected-row" : ""}
              data-testid={r.selected ? "candidate-selected" : r.kept ? "candidate-kept" : undefined}
            >
              <td className="mono">
                {r.hook} {r.selected && <Badge tone="good">selected</Badge>}
                {r.kept && <Badge tone="warn">kept, did not pass</Badge>}
              </td>
              <td className="num">{r.layer}</td>
              <td className="num">{r.position}</td>
              <td className="num">{formatFixed(r.norm)}</td>
              <td className="num">{r.massive_share ? `${(100 * r.massive_share).toFixed(0)}%` : "—"}</td>
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

/** What the selection saw: the refusal tokens (the model's own refusals' first tokens and the prefixes') and
 * the massive dimensions left out of every direction. */
function SelectionInputs({ scores }: { scores: VectorDetail["scores"] }) {
  const tokens = (scores.refusal_tokens ?? []) as RefusalToken[];
  const own = scores.own_refusals as { n_completions: number; n_refusals: number } | undefined;
  const massive = scores.massive as Massive | undefined;
  if (!tokens.length && !massive) return null;
  return (
    <p className="muted small" data-testid="selection-inputs">
      Refusal tokens:{" "}
      {tokens.map((t, i) => (
        <span key={t.id}>
          {i > 0 && ", "}
          <code className="mono">{JSON.stringify(t.token)}</code>
          {t.own_refusals > 0 ? ` (begins ${t.own_refusals} of the model's refusals)` : ""}
        </span>
      ))}
      {own && `; the model refused ${own.n_refusals} of ${own.n_completions} harmful instructions in its own greedy completions`}
      .{" "}
      {massive &&
        (massive.dims.length
          ? `Massive dimensions (Sun et al. 2024) left out of every direction: ${massive.dims.join(", ")}.`
          : "No massive dimensions.")}
    </p>
  );
}

async function download(id: string) {
  try {
    const url = URL.createObjectURL(await steeringApi.exportFile(id));
    const a = document.createElement("a");
    a.href = url;
    a.download = `${id}.safetensors`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    window.alert(errorMessage(err));
  }
}

/** A direction's candidate table (Arditi et al.'s selection), whether a candidate passed, and its export link. */
export function VectorPanel({ detail }: { detail: VectorDetail }) {
  const failed = detail.passed === false;
  return (
    <Panel
      title={`Direction “${detail.name}”: candidates`}
      actions={
        <button className="btn btn-small btn-ghost" type="button" onClick={() => void download(detail.id)} data-testid="vector-export">
          Export .safetensors
        </button>
      }
      testId="vector-panel"
    >
      {failed && (
        <div className="error-box" role="status" data-testid="vector-unpassed">
          <div className="error-title">Not a refusal direction: no candidate passed the filters</div>
          <div className="small">
            {detail.reason} This direction is the best candidate within the KL bound, kept so that its interventions can be
            shown; it does not induce or remove refusal in this model.
          </div>
        </div>
      )}
      <p className="muted small">
        Difference of means at each (hook, post-instruction position); filters as in Arditi et al.: KL ≤ 0.1 on harmless
        prompts under ablation, layer &lt; 80% of depth, induce score &gt; 0; then
        {detail.scores.selection_rule === "bypass"
          ? " the lowest bypass score (the paper's rule)."
          : " the lowest bypass − induce score (the direction must both remove and add refusal)."}
      </p>
      <SelectionInputs scores={detail.scores} />
      {detail.candidates.rows.length ? <CandidateTable rows={detail.candidates.rows} /> : <Empty>An imported vector has no candidate table.</Empty>}
    </Panel>
  );
}
