import { Empty, Panel } from "../../ui/components";
import type { NextTokenAnswer } from "./useNextToken";

/** The next-token distribution with and without the intervention, live; the prompt's tokens are
 * buttons that make the intervention a direct edit at their position. */
export function NextTokenPanel({
  answer,
  error,
  ready,
  editPosition,
  onEditAt,
}: {
  answer: NextTokenAnswer | null;
  error: string | null;
  /** Whether the form makes a request at all (else: say what is missing). */
  ready: boolean;
  /** The position being edited, highlighted (null when the method is not a direct edit). */
  editPosition: number | null;
  onEditAt: (position: number) => void;
}) {
  return (
    <Panel title="Next token, live" testId="steer-next-token">
      {error && (
        <p className="text-bad small" data-testid="nt-error">
          {error}
        </p>
      )}
      {answer ? (
        <>
          <div className="chips" aria-label="Prompt tokens">
            {answer.data.prompt_tokens.map((t, i) => (
              <button
                key={i}
                type="button"
                className={`chip mono${editPosition === i ? " active" : ""}`}
                title={`position ${i}${editPosition !== null ? ": edit here" : ""}`}
                onClick={() => onEditAt(i)}
                data-testid="nt-token"
                data-position={i}
              >
                {JSON.stringify(t).slice(1, -1)}
              </button>
            ))}
          </div>
          <div className="compare">
            {(["default", "steered"] as const).map((k) => (
              <table className="table compact" key={k} data-testid={`nt-${k}`}>
                <thead>
                  <tr>
                    <th>{k}</th>
                    <th className="num">p</th>
                  </tr>
                </thead>
                <tbody>
                  {answer.data[k].map((t) => (
                    <tr key={t.id} data-testid="nt-row">
                      <td className="mono">{JSON.stringify(t.token)}</td>
                      <td className="num">{t.prob.toFixed(3)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ))}
          </div>
          <p className="muted small">
            KL(default ‖ steered) = <span data-testid="nt-kl">{answer.data.kl.toFixed(4)}</span> nats; round trip{" "}
            <span data-testid="nt-ms">{Math.round(answer.ms)}</span> ms. Click a token to edit at its position.
          </p>
        </>
      ) : (
        <Empty>{ready ? "Computing…" : "Choose a direction or SAE."}</Empty>
      )}
    </Panel>
  );
}
