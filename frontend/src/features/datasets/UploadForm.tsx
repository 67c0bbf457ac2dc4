import { useState } from "react";
import { errorMessage } from "../../api/client";
import { ErrorBox, Panel, Spinner } from "../../ui/components";
import { submitTo } from "../../ui/events";
import { datasetsApi } from "./api";

/** Upload a .jsonl / .txt / .parquet file as a new dataset; the server's 413 or 422 (with the line to fix) is shown as it is. */
export function UploadForm({ onAdded }: { onAdded: (id: string) => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [id, setId] = useState("");
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const pick = (f: File | null) => {
    setFile(f);
    if (f && !id) setId(f.name.replace(/\.[^.]+$/, "").replace(/[^A-Za-z0-9_.-]+/g, "-").slice(0, 60));
  };
  const upload = async () => {
    if (!file || !id) return;
    setBusy(true);
    setError(null);
    try {
      const d = await datasetsApi.upload(file, id, name);
      setFile(null);
      setId("");
      setName("");
      onAdded(d.id);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Panel title="Add a dataset" testId="dataset-upload-panel">
      <form onSubmit={submitTo(() => void upload())} className="gen-form" data-testid="dataset-upload-form">
        <div style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }}>
          <label className="field">
            <span className="field-label">file (.jsonl, .txt, .parquet)</span>
            <input type="file" accept=".jsonl,.ndjson,.txt,.text,.md,.parquet" onChange={(e) => pick(e.target.files?.[0] ?? null)} data-testid="dataset-file" />
          </label>
          <label className="field">
            <span className="field-label">id</span>
            <input value={id} onChange={(e) => setId(e.target.value)} placeholder="my-dataset" data-testid="dataset-id" />
          </label>
          <label className="field">
            <span className="field-label">name (optional)</span>
            <input value={name} onChange={(e) => setName(e.target.value)} data-testid="dataset-name" />
          </label>
          <button type="submit" className="btn btn-primary" disabled={busy || !file || !id} data-testid="dataset-upload">
            Upload
          </button>
          {busy && <Spinner label="Uploading" />}
        </div>
      </form>
      {error && <ErrorBox title="Cannot add this dataset" message={error} testId="dataset-upload-error" />}
      <p className="muted small">
        JSONL: one object per line, <span className="mono">{'{"text": ...}'}</span> or <span className="mono">{'{"messages": [{"role", "content"}, ...]}'}</span>{" "}
        (conversations are written with each model&apos;s chat template when tokenized). Text: documents separated by blank lines. Parquet: a{" "}
        <span className="mono">text</span> or <span className="mono">messages</span> column. One document in ten is held out for evaluation. A record may carry{" "}
        <span className="mono">{'"harmful": true'}</span> or <span className="mono">false</span> (a parquet <span className="mono">harmful</span> column): labelled
        instructions serve refusal directions and steering sweeps.
      </p>
    </Panel>
  );
}
