// /inspect: the prompt inspector. Text -> tokens; a token's top features (click a token);
// every token shaded by one chosen feature's activation; links to the feature pages; the selected
// token's layer-Jacobian spectrum and top directions.
import { useEffect, useMemo, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { api, errorMessage, type ActivationsResponse } from "../api/client";
import { jacobianApi, type LayerJacobian } from "../api/jacobian";
import { shadeStyle, showToken, tip } from "../components/Tokens";
import { Empty, ErrorBox, Panel, Spinner } from "../components/ui";
import { useDocumentTitle, usePolling } from "../hooks";
import { Link, replaceUrl, useSearch } from "../router";
import { chatPrompt } from "./Generate";
import { LayerJacobianResult } from "./Jacobian";

export const INSPECT_PRESETS: { id: string; label: string; text: string }[] = [
  { id: "dna", label: "DNA", text: "GATTACAGGCTAGCATGCCGTAATCGGCTATAGCTTAACG" },
  { id: "base64", label: "base64", text: "eyJ1c2VyIjogIm1pYSIsICJpZCI6IDQyfQ==" },
  { id: "chat", label: "Chat", text: chatPrompt("How do I bake bread at home?") },
  { id: "url", label: "URL", text: "https://docs.example.org/api/v2/users?page=3&sort=name#usage" },
];

const TOP_K = 8;

interface Run {
  saeId: string;
  text: string;
  res: ActivationsResponse;
}

export function Inspect() {
  useDocumentTitle("Inspect");
  const search = useSearch();
  const urlSae = useMemo(() => new URLSearchParams(search).get("sae") ?? "", [search]);
  const saes = usePolling(api.saes, (_d, e) => (e ? 5000 : null));
  const list = saes.data?.saes ?? [];
  const saeId = list.find((s) => s.id === urlSae)?.id ?? list[0]?.id ?? "";

  const [text, setText] = useState(INSPECT_PRESETS[0].text);
  const [run, setRun] = useState<Run | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [selTok, setSelTok] = useState<number | null>(null);
  const [feature, setFeature] = useState<number | null>(null);
  const [featureInput, setFeatureInput] = useState("");
  const ctrl = useRef<AbortController | null>(null);
  useEffect(() => () => ctrl.current?.abort(), []);

  const request = async (t: string, sae: string, feat: number | null) => {
    ctrl.current?.abort();
    const c = new AbortController();
    ctrl.current = c;
    setBusy(true);
    setError(null);
    try {
      const res = await api.activations(sae, { text: t, top_k: TOP_K, features: feat === null ? [] : [feat] }, c.signal);
      setRun({ saeId: sae, text: t, res });
      return res;
    } catch (err) {
      if (!c.signal.aborted) setError(errorMessage(err));
      return null;
    } finally {
      if (!c.signal.aborted) setBusy(false);
    }
  };

  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    if (!saeId || !text.trim()) return;
    const keep = run && run.saeId === saeId ? feature : null;
    const res = await request(text, saeId, keep);
    if (res) {
      setSelTok(null);
      if (keep === null) setFeature(null);
    }
  };

  const choose = async (f: number | null) => {
    setFeature(f);
    setFeatureInput(f === null ? "" : String(f));
    if (f !== null && run && !run.res.feature_activations?.[String(f)]) await request(run.text, run.saeId, f);
  };

  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      void submit();
    }
  };

  const res = run?.res;
  const acts = feature !== null ? res?.feature_activations?.[String(feature)] : undefined;
  const featMax = acts ? Math.max(1e-9, ...acts) : 0;
  const tok = res && selTok !== null ? res.tokens[selTok] : null;
  const label = (i: number) => res?.labels?.[String(i)] ?? "";
  const sae = list.find((s) => s.id === (run?.saeId ?? saeId));

  return (
    <div className="page" data-testid="inspect-page">
      <header className="page-head">
        <h1>Inspect</h1>
        <p className="lede">Run text through the model and an SAE: click a token to see its top features, choose a feature to shade every token by it.</p>
      </header>

      <Panel>
        <form className="gen-form" onSubmit={submit}>
          <div className="inspect-controls">
            <label className="field">
              <span className="field-label">SAE</span>
              <select
                value={saeId}
                onChange={(e) => {
                  replaceUrl(`/inspect?sae=${encodeURIComponent(e.target.value)}`);
                  setFeature(null);
                  setFeatureInput("");
                }}
                data-testid="inspect-sae"
              >
                {list.map((s) => (
                  <option key={s.id} value={s.id}>
                    {s.id} ({s.hook_name})
                  </option>
                ))}
              </select>
            </label>
            <div className="presets" role="group" aria-label="Presets">
              <span className="presets-label">Presets</span>
              {INSPECT_PRESETS.map((p) => (
                <button
                  key={p.id}
                  type="button"
                  className={`btn btn-small btn-preset${text === p.text ? " active" : ""}`}
                  onClick={() => setText(p.text)}
                  data-testid={`inspect-preset-${p.id}`}
                >
                  {p.label}
                </button>
              ))}
            </div>
          </div>
          <label className="field">
            <span className="field-label">text</span>
            <textarea className="prompt-input mono" value={text} onChange={(e) => setText(e.target.value)} onKeyDown={onKey} rows={4} data-testid="inspect-input" />
          </label>
          <div className="param-row">
            <span className="hint">
              <kbd>Ctrl</kbd>+<kbd>Enter</kbd> runs
            </span>
            <div className="submit-group">
              {saes.error && !saes.data ? <span className="text-bad small">cannot list SAEs</span> : null}
              <button type="submit" className="btn btn-primary" disabled={busy || !saeId || !text.trim()} data-testid="inspect-run">
                {busy ? <Spinner label="Running" testId="inspect-spinner" /> : null} Run
              </button>
            </div>
          </div>
        </form>
      </Panel>

      {error && <ErrorBox title="Could not run the inspector" message={error} />}

      {res && run && (
        <div className="inspect-grid">
          <Panel
            title="Tokens"
            testId="inspect-tokens-panel"
            actions={
              <form
                className="feature-choose"
                onSubmit={(e) => {
                  e.preventDefault();
                  const v = Number(featureInput);
                  if (featureInput.trim() !== "" && Number.isInteger(v)) void choose(v);
                }}
              >
                <label className="inline-field">
                  <span className="small muted">shade by feature</span>
                  <input
                    type="number"
                    min={0}
                    max={sae ? sae.d_sae - 1 : undefined}
                    value={featureInput}
                    onChange={(e) => setFeatureInput(e.target.value)}
                    className="feature-number"
                    data-testid="inspect-feature-input"
                  />
                </label>
                <button type="submit" className="btn btn-small">
                  Shade
                </button>
                {feature !== null && (
                  <button type="button" className="btn btn-small btn-ghost" onClick={() => void choose(null)} data-testid="inspect-clear-feature">
                    clear
                  </button>
                )}
              </form>
            }
          >
            {feature !== null && (
              <p className="shade-caption small" data-testid="inspect-shaded-by">
                Shaded by <Link to={`/features/${encodeURIComponent(run.saeId)}/${feature}`}>feature #{feature}</Link>{" "}
                <span className="mono muted">{label(feature)}</span> · peak {acts ? Math.max(0, ...acts).toFixed(3) : "…"}
              </p>
            )}
            <div className="inspect-tokens" data-testid="inspect-tokens">
              {res.tokens.map((t, i) => {
                const a = acts?.[i] ?? 0;
                return (
                  <button
                    key={i}
                    type="button"
                    className={`tok-btn mono${selTok === i ? " selected" : ""}`}
                    style={acts ? shadeStyle(a, featMax) : undefined}
                    onClick={() => setSelTok(selTok === i ? null : i)}
                    aria-pressed={selTok === i}
                    title={
                      (acts ? `${tip(t.token, a)}\n` : `#${i} ${JSON.stringify(t.token)}\n`) +
                      (t.features.length
                        ? t.features
                            .slice(0, 3)
                            .map((f) => `#${f.index} ${f.activation.toFixed(2)}  ${label(f.index)}`)
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

          <Panel title={tok ? <>Token <span className="mono">{JSON.stringify(tok.token)}</span> · position {tok.position}</> : "Top features"} testId="token-features-panel">
            {!tok ? (
              <Empty>Click a token to list its top features.</Empty>
            ) : tok.features.length === 0 ? (
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
                  {tok.features.map((f) => (
                    <tr key={f.index} className={feature === f.index ? "selected-row" : ""} data-testid="token-feature" data-index={f.index}>
                      <td className="mono">
                        <Link to={`/features/${encodeURIComponent(run.saeId)}/${f.index}`} data-testid="token-feature-link">
                          #{f.index}
                        </Link>
                      </td>
                      <td className="mono small">{label(f.index)}</td>
                      <td className="num">{f.activation.toFixed(3)}</td>
                      <td>
                        <button
                          type="button"
                          className={`btn btn-small btn-preset${feature === f.index ? " active" : ""}`}
                          onClick={() => void choose(feature === f.index ? null : f.index)}
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
          {tok && <TokenJacobian key={`${run.text}@${String(tok.position)}`} text={run.text} position={tok.position} />}
        </div>
      )}
    </div>
  );
}

/** The selected token's layer Jacobian d h_out[p] / d h_in[p] (POST /api/jacobian/layer). */
function TokenJacobian({ text, position }: { text: string; position: number }) {
  const [hookIn, setHookIn] = useState("blocks.0.hook_resid_pre");
  const [hookOut, setHookOut] = useState("blocks.1.hook_resid_post");
  const [res, setRes] = useState<LayerJacobian | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setRes(await jacobianApi.layer({ prompt: text, position, hook_in: hookIn, hook_out: hookOut, top_k: 8, n_directions: 5 }));
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Panel title={<>Layer Jacobian at position {position}</>} testId="inspect-jacobian">
      <form onSubmit={submit} style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }} data-testid="inspect-jacobian-form">
        <label className="field">
          <span className="field-label">from hook</span>
          <input value={hookIn} onChange={(e) => setHookIn(e.target.value)} className="mono" data-testid="inspect-jacobian-hook-in" />
        </label>
        <label className="field">
          <span className="field-label">to hook</span>
          <input value={hookOut} onChange={(e) => setHookOut(e.target.value)} className="mono" data-testid="inspect-jacobian-hook-out" />
        </label>
        <button type="submit" className="btn" disabled={busy} data-testid="inspect-jacobian-run">
          Spectrum and top directions
        </button>
        {busy && <Spinner />}
      </form>
      {error && <ErrorBox message={error} testId="inspect-jacobian-error" />}
      {res && <LayerJacobianResult res={res} />}
    </Panel>
  );
}
