import type { Dispatch } from "react";
import { Panel } from "../../ui/components";
import { Link } from "../../ui/router";
import { shadeStyle, showToken, tip } from "../../ui/Tokens";
import { featureUrl } from "../features/url";
import type { InspectorAction, InspectorState, InspectRun } from "./inspector";

/** A feature's label in this run ("" when it has none). */
export const labelIn = (run: InspectRun, index: number) => run.res.labels?.[String(index)] ?? "";

/** The run's tokens as buttons (click: its top features), shaded by the chosen feature. */
export function TokensPanel({
  run,
  state,
  dispatch,
  dSae,
  onChoose,
}: {
  run: InspectRun;
  state: InspectorState;
  dispatch: Dispatch<InspectorAction>;
  /** The SAE's width, for the feature input's bound. */
  dSae: number | undefined;
  onChoose: (feature: number | null) => void;
}) {
  const { feature, featureInput, selected } = state;
  const acts = feature !== null ? run.res.feature_activations?.[String(feature)] : undefined;
  const featMax = acts ? Math.max(1e-9, ...acts) : 0;
  return (
    <Panel
      title="Tokens"
      testId="inspect-tokens-panel"
      actions={
        <form
          className="feature-choose"
          onSubmit={(e) => {
            e.preventDefault();
            const v = Number(featureInput);
            if (featureInput.trim() !== "" && Number.isInteger(v)) onChoose(v);
          }}
        >
          <label className="inline-field">
            <span className="small muted">shade by feature</span>
            <input
              type="number"
              min={0}
              max={dSae !== undefined ? dSae - 1 : undefined}
              value={featureInput}
              onChange={(e) => dispatch({ type: "setFeatureInput", value: e.target.value })}
              className="feature-number"
              data-testid="inspect-feature-input"
            />
          </label>
          <button type="submit" className="btn btn-small">
            Shade
          </button>
          {feature !== null && (
            <button type="button" className="btn btn-small btn-ghost" onClick={() => onChoose(null)} data-testid="inspect-clear-feature">
              clear
            </button>
          )}
        </form>
      }
    >
      {feature !== null && (
        <p className="shade-caption small" data-testid="inspect-shaded-by">
          Shaded by <Link to={featureUrl(run.saeId, feature)}>feature #{feature}</Link>{" "}
          <span className="mono muted">{labelIn(run, feature)}</span> · peak {acts ? Math.max(0, ...acts).toFixed(3) : "…"}
        </p>
      )}
      <div className="inspect-tokens" data-testid="inspect-tokens">
        {run.res.tokens.map((t, i) => {
          const a = acts?.[i] ?? 0;
          return (
            <button
              key={i}
              type="button"
              className={`tok-btn mono${selected === i ? " selected" : ""}`}
              style={acts ? shadeStyle(a, featMax) : undefined}
              onClick={() => dispatch({ type: "toggleToken", index: i })}
              aria-pressed={selected === i}
              title={
                (acts ? `${tip(t.token, a)}\n` : `#${i} ${JSON.stringify(t.token)}\n`) +
                (t.features.length
                  ? t.features
                      .slice(0, 3)
                      .map((f) => `#${f.index} ${f.activation.toFixed(2)}  ${labelIn(run, f.index)}`)
                      .join("\n")
                  : "no active features")
              }
              data-testid="inspect-token"
              data-activation={acts ? a : undefined}
            >
              {showToken(t.token)}
            </button>
          );
        })}
      </div>
    </Panel>
  );
}
