import type { NextTokenAnswer } from "../steering/useNextToken";

export const EDIT_CONTINUE_TOKENS = 12;

/** Next-token tables and greedy continuations before and after the edit, with the KL between them. */
export function TokenEditResult({ answer }: { answer: NextTokenAnswer }) {
  const { data } = answer;
  const before = new Set(data.default.map((t) => t.id));
  return (
    <div data-testid="inspect-edit-result" data-edit={JSON.stringify(answer.request.interventions?.[0])} style={{ marginTop: 10 }}>
      <div className="compare">
        {(["default", "steered"] as const).map((k) => (
          <table className="table compact" key={k} data-testid={k === "default" ? "inspect-edit-before" : "inspect-edit-after"}>
            <thead>
              <tr>
                <th>{k === "default" ? "next token, before" : "next token, after the edit"}</th>
                <th className="num">p</th>
              </tr>
            </thead>
            <tbody>
              {data[k].map((t) => (
                <tr key={t.id} data-testid="inspect-edit-row" data-token-id={t.id}>
                  <td className="mono">
                    {JSON.stringify(t.token)}
                    {k === "steered" && !before.has(t.id) ? <span className="muted small"> new</span> : null}
                  </td>
                  <td className="num">{t.prob.toFixed(3)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ))}
      </div>
      <div className="compare" style={{ marginTop: 10 }}>
        {(["default", "steered"] as const).map((k) => (
          <div className="transcript-block" key={k}>
            <div className="transcript-label">{k === "default" ? "greedy continuation, before" : "greedy continuation, after"}</div>
            <pre className="transcript">
              <span className="completion-text" data-testid={k === "default" ? "inspect-edit-default-continuation" : "inspect-edit-steered-continuation"}>
                {(k === "default" ? data.default_continuation : data.steered_continuation) ?? ""}
              </span>
            </pre>
          </div>
        ))}
      </div>
      <p className="muted small" style={{ marginBottom: 0 }}>
        KL(before ‖ after) = <span data-testid="inspect-edit-kl">{data.kl.toFixed(4)}</span> nats · {EDIT_CONTINUE_TOKENS} greedy tokens · round trip{" "}
        <span data-testid="inspect-edit-ms">{Math.round(answer.ms)}</span> ms
      </p>
    </div>
  );
}
