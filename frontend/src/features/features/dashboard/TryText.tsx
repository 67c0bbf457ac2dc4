import { useState } from "react";
import { errorMessage } from "../../../api/client";
import { ErrorBox, Panel, Spinner } from "../../../ui/components";
import { TokenText } from "../../../ui/Tokens";
import { saesApi, type ActivationsResponse, type Dashboard } from "../api";
import { submitTo } from "../../../ui/events";

/** The feature on text of your own: every token shaded by its activation. */
export function TryText({ d }: { d: Dashboard }) {
  const [text, setText] = useState("");
  const [res, setRes] = useState<ActivationsResponse | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const run = async () => {
    if (!text.trim()) return;
    setBusy(true);
    setError(null);
    try {
      setRes(await saesApi.activations(d.sae_id, { text, top_k: 1, features: [d.index] }));
    } catch (err) {
      setError(errorMessage(err));
      setRes(null);
    } finally {
      setBusy(false);
    }
  };
  const acts = res?.feature_activations?.[String(d.index)] ?? [];
  const peak = Math.max(0, ...acts);
  return (
    <Panel title="Test on your text" testId="try-text">
      <form className="try-form" onSubmit={submitTo(() => void run())}>
        <label className="field grow">
          <span className="field-label">text</span>
          <input value={text} onChange={(e) => setText(e.target.value)} placeholder="type text to see where this feature fires" data-testid="try-input" />
        </label>
        <button type="submit" className="btn" disabled={busy || !text.trim()} data-testid="try-run">
          {busy && <Spinner label="Running" />} Run
        </button>
      </form>
      {error && <ErrorBox title="Could not run" message={error} />}
      {res && (
        <div className="example try-result">
          <span className="example-act num" title="peak activation on this text">
            {peak.toFixed(2)}
          </span>
          <TokenText tokens={res.tokens.map((t, i) => ({ token: t.token, activation: acts[i] ?? 0 }))} max={Math.max(d.max_activation, peak)} testId="try-tokens" />
        </div>
      )}
    </Panel>
  );
}
