import { useRef } from "react";
import { Spinner } from "../../ui/components";
import { type GenerateForm as Form, type GeneratePreset } from "./state";
import { onCtrlEnter, submitTo } from "../../ui/events";

/** Presets, prompt and sampling parameters (the model is the sidebar's).
 * Ctrl/Cmd+Enter anywhere in the form submits. */
export function GenerateForm({
  form,
  presets,
  setField,
  busy,
  onSubmit,
}: {
  form: Form;
  presets: GeneratePreset[];
  setField: <K extends keyof Form>(k: K, v: Form[K]) => void;
  busy: boolean;
  onSubmit: () => void;
}) {
  const promptRef = useRef<HTMLTextAreaElement>(null);
  const applyPreset = (prompt: string) => {
    setField("prompt", prompt);
    promptRef.current?.focus();
  };

  return (
    <form className="gen-form" onSubmit={submitTo(onSubmit)} onKeyDown={onCtrlEnter(onSubmit)} noValidate>
      <div className="presets" role="group" aria-label="Preset prompts">
        <span className="presets-label">Presets</span>
        {presets.map((p) => (
          <button
            key={p.id}
            type="button"
            className={`btn btn-small btn-preset${form.prompt === p.prompt ? " active" : ""}`}
            title={p.hint}
            onClick={() => applyPreset(p.prompt)}
            data-testid={`preset-${p.id}`}
          >
            {p.label}
          </button>
        ))}
      </div>

      <label className="field field-prompt">
        <span className="field-label">Prompt</span>
        <textarea
          ref={promptRef}
          className="mono prompt-input"
          value={form.prompt}
          onChange={(e) => setField("prompt", e.target.value)}
          rows={5}
          spellCheck={false}
          data-testid="prompt-input"
        />
      </label>

      <div className="param-row">
        <label className="field">
          <span className="field-label">max_new_tokens</span>
          <input
            type="number"
            min={1}
            max={256}
            step={1}
            className="mono"
            value={form.maxNewTokens}
            onChange={(e) => setField("maxNewTokens", e.target.value)}
            data-testid="max-tokens-input"
          />
        </label>
        <label className="field">
          <span className="field-label">temperature</span>
          <input
            type="number"
            min={0}
            step={0.1}
            className="mono"
            value={form.temperature}
            onChange={(e) => setField("temperature", e.target.value)}
            data-testid="temperature-input"
          />
        </label>
        <label className="field">
          <span className="field-label">seed</span>
          <input
            type="number"
            step={1}
            className="mono"
            placeholder="random"
            value={form.seed}
            onChange={(e) => setField("seed", e.target.value)}
            data-testid="seed-input"
          />
        </label>
        <div className="submit-group">
          <button type="submit" className="btn btn-primary" disabled={busy} data-testid="generate-button">
            {busy ? (
              <>
                <Spinner label="Generating" testId="generate-spinner" /> Generating…
              </>
            ) : (
              "Generate"
            )}
          </button>
          <span className="hint">
            <kbd>Ctrl</kbd>+<kbd>Enter</kbd>
          </span>
        </div>
      </div>
    </form>
  );
}
