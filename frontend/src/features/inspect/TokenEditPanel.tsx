// Live editing at the selected token: one SAE feature (or one neuron at a hook) set, scaled or zeroed
// at this position; on every change (debounced) POST /api/steering/next-token with `continue_tokens`
// gives the top next tokens and the greedy continuation before and after.
import { useState } from "react";
import { Empty, ErrorBox, Panel, Spinner } from "../../ui/components";
import type { SAEList } from "../features/api";
import type { EditOp } from "../steering/form";
import { useNextToken } from "../steering/useNextToken";
import { EDIT_RANGE, editOf, initialEditInputs, sliderValue, type TokenEditInputs } from "./tokenEdit";
import { EDIT_CONTINUE_TOKENS, TokenEditResult } from "./TokenEditResult";

const EDIT_TOP_K = 8;
const EDIT_DEBOUNCE_MS = 100;

export function TokenEditPanel({
  text,
  position,
  token,
  features,
  labels,
  sae,
}: {
  text: string;
  position: number;
  token: string;
  features: { index: number; activation: number }[];
  labels: Record<string, string>;
  sae: SAEList["saes"][number];
}) {
  const [inputs, setInputs] = useState<TokenEditInputs>(() => initialEditInputs(features, sae.hook_name));
  const set = (patch: Partial<TokenEditInputs>) => setInputs((s) => ({ ...s, ...patch }));
  const edit = editOf(inputs, sae.id, position);
  const invalid = typeof edit === "string" ? edit : null;
  const { answer, error, busy } = useNextToken(
    typeof edit === "string"
      ? null
      : { prompt: text, model_id: sae.model_id, interventions: [edit], top_k: EDIT_TOP_K, continue_tokens: EDIT_CONTINUE_TOKENS },
    EDIT_DEBOUNCE_MS,
  );
  const { target, op } = inputs;
  const range = EDIT_RANGE[op];
  const listed = features.find((f) => String(f.index) === inputs.feature.trim());

  return (
    <div style={{ gridColumn: "1 / -1" }}>
      <Panel
        title={
          <>
            Edit this token: <span className="mono">{JSON.stringify(token)}</span> · position {position}
          </>
        }
        actions={busy ? <Spinner label="Updating" testId="inspect-edit-busy" /> : null}
        testId="inspect-edit"
      >
        <div className="param-row" style={{ alignItems: "flex-end" }} data-testid="inspect-edit-form">
          <div className="field">
            <span className="field-label">edit</span>
            <div className="feature-choose" role="group" aria-label="Edit a feature or a neuron">
              {(["feature", "neuron"] as const).map((k) => (
                <button
                  key={k}
                  type="button"
                  className={`btn btn-small btn-preset${target === k ? " active" : ""}`}
                  aria-pressed={target === k}
                  onClick={() => set({ target: k })}
                  data-testid={`inspect-edit-target-${k}`}
                >
                  {k === "feature" ? "SAE feature" : "neuron"}
                </button>
              ))}
            </div>
          </div>
          {target === "feature" ? (
            <>
              <label className="field">
                <span className="field-label">this token's features</span>
                <select
                  value={listed ? String(listed.index) : ""}
                  onChange={(e) => e.target.value !== "" && set({ feature: e.target.value })}
                  data-testid="inspect-edit-feature-select"
                  style={{ maxWidth: 280 }}
                >
                  <option value="">other (type the index)</option>
                  {features.map((f) => (
                    <option key={f.index} value={String(f.index)}>
                      #{f.index} {f.activation.toFixed(2)} {labels[String(f.index)] ?? ""}
                    </option>
                  ))}
                </select>
              </label>
              <label className="field">
                <span className="field-label">feature of {sae.id}</span>
                <input
                  type="number"
                  min={0}
                  max={sae.d_sae - 1}
                  step={1}
                  value={inputs.feature}
                  onChange={(e) => set({ feature: e.target.value })}
                  className="feature-number"
                  data-testid="inspect-edit-feature"
                />
              </label>
            </>
          ) : (
            <>
              <label className="field">
                <span className="field-label">hook</span>
                <input value={inputs.hook} onChange={(e) => set({ hook: e.target.value })} className="mono" style={{ width: 220 }} data-testid="inspect-edit-hook" />
              </label>
              <label className="field">
                <span className="field-label">neuron</span>
                <input
                  type="number"
                  min={0}
                  step={1}
                  value={inputs.neuron}
                  onChange={(e) => set({ neuron: e.target.value })}
                  className="feature-number"
                  data-testid="inspect-edit-neuron"
                />
              </label>
            </>
          )}
          <label className="field">
            <span className="field-label">op</span>
            <select value={op} onChange={(e) => set({ op: e.target.value as EditOp })} data-testid="inspect-edit-op">
              <option value="set">set to</option>
              <option value="scale">scale by</option>
              <option value="zero">zero</option>
            </select>
          </label>
          <label className="field">
            <span className="field-label">value</span>
            <input
              type="number"
              step="any"
              value={op === "zero" ? "0" : inputs.value}
              disabled={op === "zero"}
              onChange={(e) => set({ value: e.target.value })}
              className="feature-number"
              data-testid="inspect-edit-value"
            />
          </label>
          <label className="field" style={{ flex: "1 1 200px" }}>
            <span className="field-label">
              {range.min} … {range.max}
            </span>
            <input
              type="range"
              min={range.min}
              max={range.max}
              step={range.step}
              value={sliderValue(inputs)}
              disabled={op === "zero"}
              onChange={(e) => set({ value: e.target.value })}
              aria-label="value"
              style={{ width: "100%", padding: 0 }}
              data-testid="inspect-edit-range"
            />
          </label>
        </div>
        {target === "feature" && (
          <p className="muted small" data-testid="inspect-edit-now">
            {listed
              ? `Feature #${listed.index} is ${listed.activation.toFixed(3)} at this token.`
              : "This feature is not among the token's top features (0 or small here)."}{" "}
            The edit applies at position {position} only, with the SAE's reconstruction error kept.
          </p>
        )}
        {invalid && (
          <p className="text-bad small" data-testid="inspect-edit-invalid">
            {invalid}
          </p>
        )}
        {error ? (
          <ErrorBox title="Could not apply the edit" message={error} testId="inspect-edit-error" />
        ) : answer ? (
          <TokenEditResult answer={answer} />
        ) : (
          !invalid && <Empty>Computing…</Empty>
        )}
      </Panel>
    </div>
  );
}
