import { Empty, Panel } from "../../ui/components";
import { Link } from "../../ui/router";
import type { TokenActivations } from "../features/api";
import { featureUrl } from "../features/url";
import type { InspectRun } from "./inspector";
import { labelIn } from "./TokensPanel";

/** The selected token's top features: label, activation, dashboard link, shade button. */
export function TokenFeaturesPanel({
  run,
  token,
  feature,
  onChoose,
}: {
  run: InspectRun;
  token: TokenActivations | null;
  /** The feature the tokens are shaded by. */
  feature: number | null;
  onChoose: (feature: number | null) => void;
}) {
  return (
    <Panel
      title={
        token ? (
          <>
            Token <span className="mono">{JSON.stringify(token.token)}</span> · position {token.position}
          </>
        ) : (
          "Top features"
        )
      }
      testId="token-features-panel"
    >
      {!token ? (
        <Empty>Click a token to list its top features.</Empty>
      ) : token.features.length === 0 ? (
        <Empty>No feature is active on this token.</Empty>
      ) : (
        <table className="table compact" data-testid="token-features">
          <thead>
            <tr>
              <th>feature</th>
              <th>label</th>
              <th className="num">activation</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {token.features.map((f) => (
              <tr key={f.index} className={feature === f.index ? "selected-row" : ""} data-testid="token-feature" data-index={f.index}>
                <td className="mono">
                  <Link to={featureUrl(run.saeId, f.index)} data-testid="token-feature-link">
                    #{f.index}
                  </Link>
                </td>
                <td className="mono small">{labelIn(run, f.index)}</td>
                <td className="num">{f.activation.toFixed(3)}</td>
                <td>
                  <button
                    type="button"
                    className={`btn btn-small btn-preset${feature === f.index ? " active" : ""}`}
                    onClick={() => onChoose(feature === f.index ? null : f.index)}
                    aria-pressed={feature === f.index}
                    data-testid="token-feature-shade"
                  >
                    shade
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Panel>
  );
}
