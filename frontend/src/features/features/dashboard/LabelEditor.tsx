import { useState } from "react";
import { errorMessage } from "../../../api/client";
import { Badge, ErrorBox, Spinner } from "../../../ui/components";
import { saesApi, type Dashboard } from "../api";
import { submitTo } from "../../../ui/events";

/** A person's label for the feature (PUT persists; empty removes), beside the automatic one. Keyed
 * by feature, so its state starts afresh on another feature. */
export function LabelEditor({ d, onSaved }: { d: Dashboard; onSaved: (label: string | null) => void }) {
  const [value, setValue] = useState(d.label ?? "");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  // The input follows the saved label (the server may normalise what was typed).
  const [shownLabel, setShownLabel] = useState(d.label);
  if (d.label !== shownLabel) {
    setShownLabel(d.label);
    setValue(d.label ?? "");
  }

  const dirty = value.trim() !== (d.label ?? "");
  const save = async () => {
    setBusy(true);
    setError(null);
    try {
      const r = await saesApi.setLabel(d.sae_id, d.index, value);
      onSaved(r.label ?? null);
      setSaved(true);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="label-editor" onSubmit={submitTo(() => void save())}>
      <label className="field grow">
        <span className="field-label">your label (empty to remove)</span>
        <input
          value={value}
          maxLength={200}
          placeholder={d.auto_label}
          onChange={(e) => {
            setValue(e.target.value);
            setSaved(false);
          }}
          data-testid="label-input"
        />
      </label>
      <button type="submit" className="btn" disabled={busy || !dirty} data-testid="label-save">
        {busy ? <Spinner label="Saving" /> : null}
        Save label
      </button>
      {saved && !dirty && (
        <Badge tone="good" testId="label-saved">
          saved
        </Badge>
      )}
      <span className="auto-label small">
        <span className="muted">automatic label</span> <span className="mono" data-testid="auto-label">{d.auto_label}</span>
      </span>
      {error && <ErrorBox title="Could not save the label" message={error} testId="label-error" />}
    </form>
  );
}

/** A person's label written for an earlier version of the SAE (its weights changed since, so the index
 * may name another feature now): shown muted and marked, never as the feature's label. */
export function StaleLabel({ stale }: { stale: { label: string; version: number } }) {
  return (
    <span className="stale-label muted small" data-testid="stale-label" title={`written for version ${stale.version} of this SAE; its weights have changed since`}>
      “{stale.label}” <span className="stale-label-note">from an earlier version (v{stale.version})</span>
    </span>
  );
}
