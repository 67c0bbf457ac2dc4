import type { Dispatch } from "react";
import { Spinner } from "../../ui/components";
import type { SAEList } from "../features/api";
import { SaeOptions } from "../features/SaeOptions";
import type { ChatFormat } from "../models/chat";
import { inspectPresets, type InspectorAction, type InspectorState } from "./inspector";
import { onCtrlEnter, submitTo } from "../../ui/events";

/** The inspector's form: SAE, presets, the text; Ctrl/Cmd+Enter runs. */
export function InspectForm({
  state,
  dispatch,
  saes,
  saeId,
  saesError,
  chat,
  onSaeChange,
  onRun,
}: {
  state: InspectorState;
  dispatch: Dispatch<InspectorAction>;
  saes: SAEList["saes"];
  saeId: string;
  /** The SAE list could not be fetched (and none is known). */
  saesError: boolean;
  /** The chat format of the SAE's model, for the chat preset. */
  chat?: ChatFormat;
  onSaeChange: (saeId: string) => void;
  onRun: () => void;
}) {
  const { text, busy } = state;
  return (
    <form className="gen-form" onSubmit={submitTo(onRun)}>
      <div className="inspect-controls">
        <label className="field">
          <span className="field-label">SAE</span>
          <select value={saeId} onChange={(e) => onSaeChange(e.target.value)} data-testid="inspect-sae">
            <SaeOptions saes={saes} />
          </select>
        </label>
        <div className="presets" role="group" aria-label="Presets">
          <span className="presets-label">Presets</span>
          {inspectPresets(chat).map((p) => (
            <button
              key={p.id}
              type="button"
              className={`btn btn-small btn-preset${text === p.text ? " active" : ""}`}
              onClick={() => dispatch({ type: "setText", text: p.text })}
              data-testid={`inspect-preset-${p.id}`}
            >
              {p.label}
            </button>
          ))}
        </div>
      </div>
      <label className="field">
        <span className="field-label">text</span>
        <textarea
          className="prompt-input mono"
          value={text}
          onChange={(e) => dispatch({ type: "setText", text: e.target.value })}
          onKeyDown={onCtrlEnter(onRun)}
          rows={4}
          data-testid="inspect-input"
        />
      </label>
      <div className="param-row">
        <span className="hint">
          <kbd>Ctrl</kbd>+<kbd>Enter</kbd> runs
        </span>
        <div className="submit-group">
          {saesError ? <span className="text-bad small">cannot list SAEs</span> : null}
          <button type="submit" className="btn btn-primary" disabled={busy || !saeId || !text.trim()} data-testid="inspect-run">
            {busy ? <Spinner label="Running" testId="inspect-spinner" /> : null} Run
          </button>
        </div>
      </div>
    </form>
  );
}
