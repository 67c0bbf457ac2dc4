import { useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { errorMessage } from "../api/client";
import { generateApi, type Generation } from "../features/generate/api";
import { buildRequest, PRESETS, type GenerateForm, type GenerateState } from "../features/generate/state";
import type { ModelInfo } from "../features/models/api";
import { ErrorBox, Panel, Spinner } from "../ui/components";
import { formatDuration } from "../ui/format";
import { useDocumentTitle } from "../ui/hooks";

function showToken(tok: string): string {
  return tok.replace(/ /g, "·").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍") || "∅";
}

function TokenChips({ tokens, testId }: { tokens: string[]; testId: string }) {
  return (
    <div className="chips" data-testid={testId}>
      {tokens.map((t, i) => (
        <span key={i} className="chip mono" title={`#${i} ${JSON.stringify(t)}`} data-testid="token-chip">
          {showToken(t)}
        </span>
      ))}
    </div>
  );
}

function Transcript({
  prompt,
  gen,
  label,
  testId,
  showTokens,
}: {
  prompt: string;
  gen: Generation;
  label?: string;
  testId: string;
  showTokens: boolean;
}) {
  return (
    <div className="transcript-block">
      {label && <div className="transcript-label">{label}</div>}
      <pre className="transcript">
        <span className="prompt-text">{prompt}</span>
        <span className="completion-text" data-testid={testId}>
          {gen.completion}
        </span>
      </pre>
      {showTokens && <TokenChips tokens={gen.tokens} testId={`${testId}-tokens`} />}
    </div>
  );
}

export function Generate({
  state,
  setState,
  models,
}: {
  state: GenerateState;
  setState: (f: (s: GenerateState) => GenerateState) => void;
  models: ModelInfo[];
}) {
  useDocumentTitle("Generate");
  const { form, run, error } = state;
  const [busy, setBusy] = useState(false);
  const [showTokens, setShowTokens] = useState(false);
  const ctrl = useRef<AbortController | null>(null);
  const promptRef = useRef<HTMLTextAreaElement>(null);

  useEffect(() => () => ctrl.current?.abort(), []);

  const setField = <K extends keyof GenerateForm>(k: K, v: GenerateForm[K]) =>
    setState((s) => ({ ...s, form: { ...s.form, [k]: v } }));

  const submit = async () => {
    if (busy) return;
    const body = buildRequest(form);
    if (typeof body === "string") {
      setState((s) => ({ ...s, error: body, run: null }));
      return;
    }
    ctrl.current?.abort();
    const c = new AbortController();
    ctrl.current = c;
    setBusy(true);
    setState((s) => ({ ...s, error: null }));
    const t0 = performance.now();
    try {
      const response = await generateApi.generate(body, c.signal);
      const elapsedMs = performance.now() - t0;
      setState((s) => ({ ...s, run: { prompt: body.prompt, request: body, response, elapsedMs }, error: null }));
    } catch (err) {
      if (c.signal.aborted) return;
      setState((s) => ({ ...s, run: null, error: errorMessage(err) }));
    } finally {
      if (ctrl.current === c) {
        ctrl.current = null;
        setBusy(false);
      }
    }
  };

  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    void submit();
  };

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      void submit();
    }
  };

  const applyPreset = (prompt: string) => {
    setField("prompt", prompt);
    promptRef.current?.focus();
  };

  const resp = run?.response;
  const nGenerated = resp?.default.tokens.length ?? 0;

  return (
    <div className="page generate">
      <header className="page-head">
        <h1>Generate</h1>
        <p className="lede">
          Sample from the model. Prompts use the chat format <code className="mono">User: …\nAssistant:</code>; temperature 0 is
          greedy.
        </p>
      </header>

      <Panel>
        <form className="gen-form" onSubmit={onSubmit} onKeyDown={onKeyDown} noValidate>
          <div className="presets" role="group" aria-label="Preset prompts">
            <span className="presets-label">Presets</span>
            {PRESETS.map((p) => (
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
            {models.length > 1 && (
              <label className="field">
                <span className="field-label">model</span>
                <select value={form.modelId} onChange={(e) => setField("modelId", e.target.value)} data-testid="model-select">
                  <option value="">default</option>
                  {models.map((m) => (
                    <option key={m.id} value={m.id}>
                      {m.name}
                    </option>
                  ))}
                </select>
              </label>
            )}
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
      </Panel>

      {error && <ErrorBox title="Generation failed" message={error} />}

      {run && resp && (
        <Panel
          className={busy ? "stale" : ""}
          title="Output"
          actions={
            <button
              type="button"
              className="btn btn-small btn-ghost"
              onClick={() => setShowTokens((v) => !v)}
              aria-pressed={showTokens}
              data-testid="toggle-tokens"
            >
              {showTokens ? "Hide tokens" : "Show tokens"}
            </button>
          }
        >
          <div className={resp.steered ? "compare" : ""} data-testid="generate-output">
            <Transcript
              prompt={run.prompt}
              gen={resp.default}
              label={resp.steered ? "Default" : undefined}
              testId="completion"
              showTokens={showTokens}
            />
            {resp.steered && (
              <Transcript prompt={run.prompt} gen={resp.steered} label="Steered" testId="completion-steered" showTokens={showTokens} />
            )}
          </div>
          <div className="gen-meta muted small" data-testid="generate-meta">
            <span>
              model <span className="mono">{resp.model_id}</span>
            </span>
            <span>{resp.prompt_tokens} prompt tokens</span>
            <span>
              {nGenerated} generated token{nGenerated === 1 ? "" : "s"}
            </span>
            <span>
              {run.request.temperature === 0
                ? "greedy"
                : `T = ${run.request.temperature}${run.request.seed !== null && run.request.seed !== undefined ? `, seed ${run.request.seed}` : ""}`}
            </span>
            <span>{formatDuration(run.elapsedMs)}</span>
          </div>
        </Panel>
      )}

      {!run && !error && busy && (
        <Panel>
          <div className="waiting">
            <Spinner /> Waiting for the model…
          </div>
        </Panel>
      )}
    </div>
  );
}
