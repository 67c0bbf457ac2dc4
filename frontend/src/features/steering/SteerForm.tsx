// The steering form: prompt, method and the fields that method takes, presets.
import { useState } from "react";
import type { SAEList } from "../features/api";
import { SaeOptions } from "../features/SaeOptions";
import type { Vector } from "./api";
import { METHODS, usesAlpha, usesSae, usesVector, type EditOp, type Method, type SteerForm as Form, type SteerDispatch, type SteerFormAction } from "./form";
import { useSteerPresets } from "./presets";
import { submitTo } from "../../ui/events";

export function SteerForm({
  form,
  dispatch,
  vectors,
  saes,
  streaming,
  onRun,
}: {
  form: Form;
  dispatch: SteerDispatch;
  vectors: Vector[];
  saes: SAEList["saes"];
  streaming: boolean;
  onRun: () => void;
}) {
  const set = <K extends keyof Form>(field: K, value: Form[K]) => dispatch({ type: "set", field, value } as SteerFormAction);
  const { method } = form;
  const sae = usesSae(method);
  const methodHint = METHODS.find((m) => m.id === method)?.hint;

  return (
    <form className="gen-form" onSubmit={submitTo(onRun)} noValidate data-testid="steer-form">
      <label className="field field-prompt">
        <span className="field-label">Prompt</span>
        <textarea
          className="mono prompt-input"
          rows={3}
          value={form.prompt}
          spellCheck={false}
          onChange={(e) => set("prompt", e.target.value)}
          data-testid="steer-prompt"
        />
      </label>
      <div className="param-row">
        <label className="field">
          <span className="field-label">method</span>
          <select value={method} onChange={(e) => set("method", e.target.value as Method)} data-testid="steer-method">
            {METHODS.map((m) => (
              <option key={m.id} value={m.id}>
                {m.label}
              </option>
            ))}
          </select>
        </label>
        {usesVector(method) && (
          <label className="field">
            <span className="field-label">direction</span>
            <select value={form.vectorId} onChange={(e) => set("vectorId", e.target.value)} data-testid="steer-vector">
              {vectors.map((v) => (
                <option key={v.id} value={v.id}>
                  {v.name} ({v.hook}){v.passed === false ? " — did not pass: not a refusal direction" : ""}
                </option>
              ))}
            </select>
          </label>
        )}
        {usesAlpha(method) && (
          <label className="field">
            <span className="field-label">
              alpha <span className="mono">{form.alpha.toFixed(2)}</span>
            </span>
            <input
              type="range"
              min={-1}
              max={2}
              step={0.05}
              value={form.alpha}
              onChange={(e) => set("alpha", Number(e.target.value))}
              data-testid="steer-alpha"
            />
          </label>
        )}
        {(sae || method === "edit") && (
          <label className="field">
            <span className="field-label">SAE</span>
            <select value={form.saeId} onChange={(e) => set("saeId", e.target.value)} data-testid="steer-sae">
              <option value="">{method === "edit" ? "none (a neuron)" : "choose an SAE"}</option>
              <SaeOptions saes={saes} />
            </select>
          </label>
        )}
        {(sae || (method === "edit" && form.saeId)) && (
          <label className="field">
            <span className="field-label">feature</span>
            <input type="number" min={0} className="mono" value={form.feature} onChange={(e) => set("feature", Number(e.target.value))} data-testid="steer-feature" />
          </label>
        )}
        {method === "edit" && !form.saeId && (
          <>
            <label className="field">
              <span className="field-label">hook</span>
              <input className="mono" value={form.hook} onChange={(e) => set("hook", e.target.value)} data-testid="steer-hook" />
            </label>
            <label className="field">
              <span className="field-label">neuron</span>
              <input type="number" min={0} className="mono" value={form.index} onChange={(e) => set("index", Number(e.target.value))} data-testid="steer-index" />
            </label>
          </>
        )}
        {method === "edit" && (
          <>
            <label className="field">
              <span className="field-label">position</span>
              <input className="mono" value={form.position} placeholder="all" onChange={(e) => set("position", e.target.value)} data-testid="steer-position" />
            </label>
            <label className="field">
              <span className="field-label">op</span>
              <select value={form.op} onChange={(e) => set("op", e.target.value as EditOp)} data-testid="steer-op">
                <option value="set">set</option>
                <option value="scale">scale</option>
                <option value="zero">zero</option>
              </select>
            </label>
          </>
        )}
        {(sae || (method === "edit" && form.op !== "zero")) && (
          <label className="field">
            <span className="field-label">{sae ? "strength c" : "value"}</span>
            <input type="number" step={0.5} className="mono" value={form.value} onChange={(e) => set("value", Number(e.target.value))} data-testid="steer-value" />
          </label>
        )}
        <label className="field">
          <span className="field-label">max_new_tokens</span>
          <input type="number" min={1} max={128} className="mono" value={form.maxNewTokens} onChange={(e) => set("maxNewTokens", Number(e.target.value))} data-testid="steer-max-tokens" />
        </label>
        <div className="submit-group">
          <button type="submit" className="btn btn-primary" disabled={streaming || (usesVector(method) && !form.vectorId)} data-testid="steer-run">
            {streaming ? "Streaming…" : "Generate"}
          </button>
        </div>
      </div>
      {methodHint && <p className="muted small">{methodHint}</p>}
      <SteerPresets form={form} dispatch={dispatch} />
    </form>
  );
}

function SteerPresets({ form, dispatch }: { form: Form; dispatch: SteerDispatch }) {
  const { presets, save, find } = useSteerPresets();
  const [name, setName] = useState("");
  return (
    <div className="param-row" data-testid="steer-presets">
      <label className="field">
        <span className="field-label">preset name</span>
        <input value={name} onChange={(e) => setName(e.target.value)} placeholder="e.g. ACE full" data-testid="steer-preset-name" />
      </label>
      <button
        type="button"
        className="btn btn-small"
        onClick={() => {
          save(name, form);
          setName("");
        }}
        data-testid="steer-preset-save"
      >
        Save preset
      </button>
      <label className="field">
        <span className="field-label">load preset</span>
        <select
          value=""
          onChange={(e) => {
            const p = find(e.target.value);
            if (p) dispatch({ type: "loadPreset", settings: p.form });
          }}
          data-testid="steer-preset-select"
        >
          <option value="">{presets.length ? "choose…" : "no presets yet"}</option>
          {presets.map((p) => (
            <option key={p.name} value={p.name}>
              {p.name}
            </option>
          ))}
        </select>
      </label>
    </div>
  );
}
