// /inspect: the prompt inspector. Text -> tokens; a token's top features (click a token);
// every token shaded by one chosen feature's activation; links to the feature pages; the selected
// token's layer-Jacobian spectrum and top directions; live editing of one feature or neuron at the
// selected token (next-token distribution and greedy continuation before/after).
import { useEffect, useMemo, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { errorMessage } from "../api/client";
import { saesApi, type ActivationsResponse, type SAEList } from "../features/features/api";
import { steeringApi, type Intervention, type NextToken, type NextTokenRequest } from "../features/steering/api";
import { shadeStyle, showToken, tip } from "../ui/Tokens";
import { Empty, ErrorBox, Panel, Spinner } from "../ui/components";
import { useDocumentTitle, usePolling } from "../ui/hooks";
import { Link, replaceUrl, useSearch } from "../ui/router";
import { chatPrompt } from "../features/generate/chat";
import { LayerJacobianResult } from "../features/jacobian/LayerJacobianResult";
import { useLayerJacobian } from "../features/jacobian/useLayerJacobian";

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
  const saes = usePolling(saesApi.saes, (_d, e) => (e ? 5000 : null));
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
      const res = await saesApi.activations(sae, { text: t, top_k: TOP_K, features: feat === null ? [] : [feat] }, c.signal);
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
        <form className="gen-form" onSubmit={(e) => void submit(e)}>
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
          {tok && sae && (
            <TokenEdit
              key={`${run.saeId}|${run.text}@${String(tok.position)}`}
              text={run.text}
              position={tok.position}
              token={tok.token}
              features={tok.features}
              labels={res.labels ?? {}}
              sae={sae}
            />
          )}
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
  const { res, error, busy, compute } = useLayerJacobian();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void compute(text, position, hookIn, hookOut);
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

type EditOp = "set" | "scale" | "zero";
type EditTarget = "feature" | "neuron";
const EDIT_TOP_K = 8;
const EDIT_CONTINUE_TOKENS = 12;
const EDIT_DEBOUNCE_MS = 100;
const EDIT_RANGE: Record<EditOp, { min: number; max: number; step: number }> = {
  set: { min: -100, max: 100, step: 0.5 },
  scale: { min: -5, max: 5, step: 0.1 },
  zero: { min: 0, max: 0, step: 1 },
};

/** Live editing at the selected token: one SAE feature (or one neuron at a hook) set, scaled or
 * zeroed at this position; on every change (debounced) POST /api/steering/next-token with
 * `continue_tokens` gives the top next tokens and the greedy continuation before and after. */
function TokenEdit({
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
  const [target, setTarget] = useState<EditTarget>("feature");
  const [featureInput, setFeatureInput] = useState(features.length ? String(features[0].index) : "0");
  const [hook, setHook] = useState(sae.hook_name);
  const [neuronInput, setNeuronInput] = useState("0");
  const [op, setOp] = useState<EditOp>("set");
  const [valueInput, setValueInput] = useState("10");
  const [out, setOut] = useState<{ data: NextToken; ms: number; edit: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  // The edit as the API takes it, or why the inputs do not make one yet.
  const edit = useMemo((): Intervention | string => {
    const value = op === "zero" ? 0 : Number(valueInput);
    if (op !== "zero" && (valueInput.trim() === "" || !Number.isFinite(value))) return "Give a finite value.";
    if (target === "feature") {
      const f = Number(featureInput);
      if (featureInput.trim() === "" || !Number.isInteger(f)) return "Give a feature index (an integer).";
      return { kind: "edit", sae_id: sae.id, feature: f, position, op, value };
    }
    const n = Number(neuronInput);
    if (!hook.trim()) return "Give a hook name, e.g. blocks.0.mlp.hook_post.";
    if (neuronInput.trim() === "" || !Number.isInteger(n)) return "Give a neuron index (an integer).";
    return { kind: "edit", hook: hook.trim(), index: n, position, op, value };
  }, [target, featureInput, hook, neuronInput, op, valueInput, sae.id, position]);

  useEffect(() => {
    if (typeof edit === "string") return;
    const c = new AbortController();
    const t = setTimeout(() => {
      const body: NextTokenRequest = {
        prompt: text,
        model_id: sae.model_id,
        interventions: [edit],
        top_k: EDIT_TOP_K,
        continue_tokens: EDIT_CONTINUE_TOKENS,
      };
      const t0 = performance.now();
      setBusy(true);
      steeringApi
        .nextToken(body, c.signal)
        .then((data) => {
          setOut({ data, ms: performance.now() - t0, edit: JSON.stringify(edit) });
          setError(null);
        })
        .catch((e) => {
          if (!c.signal.aborted) setError(errorMessage(e));
        })
        .finally(() => {
          if (!c.signal.aborted) setBusy(false);
        });
    }, EDIT_DEBOUNCE_MS);
    return () => {
      clearTimeout(t);
      c.abort();
      setBusy(false);
    };
  }, [edit, text, sae.model_id]);

  const range = EDIT_RANGE[op];
  const num = Number(valueInput);
  const slider = op === "zero" ? 0 : Math.min(range.max, Math.max(range.min, Number.isFinite(num) ? num : 0));
  const listed = features.find((f) => String(f.index) === featureInput.trim());
  const invalid = typeof edit === "string" ? edit : null;
  const before = new Set(out?.data.default.map((t) => t.id) ?? []);

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
                  onClick={() => setTarget(k)}
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
                  onChange={(e) => e.target.value !== "" && setFeatureInput(e.target.value)}
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
                  value={featureInput}
                  onChange={(e) => setFeatureInput(e.target.value)}
                  className="feature-number"
                  data-testid="inspect-edit-feature"
                />
              </label>
            </>
          ) : (
            <>
              <label className="field">
                <span className="field-label">hook</span>
                <input value={hook} onChange={(e) => setHook(e.target.value)} className="mono" style={{ width: 220 }} data-testid="inspect-edit-hook" />
              </label>
              <label className="field">
                <span className="field-label">neuron</span>
                <input
                  type="number"
                  min={0}
                  step={1}
                  value={neuronInput}
                  onChange={(e) => setNeuronInput(e.target.value)}
                  className="feature-number"
                  data-testid="inspect-edit-neuron"
                />
              </label>
            </>
          )}
          <label className="field">
            <span className="field-label">op</span>
            <select value={op} onChange={(e) => setOp(e.target.value as EditOp)} data-testid="inspect-edit-op">
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
              value={op === "zero" ? "0" : valueInput}
              disabled={op === "zero"}
              onChange={(e) => setValueInput(e.target.value)}
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
              value={slider}
              disabled={op === "zero"}
              onChange={(e) => setValueInput(e.target.value)}
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
        ) : out ? (
          <div data-testid="inspect-edit-result" data-edit={out.edit} style={{ marginTop: 10 }}>
            <div className="compare">
              {(["default", "steered"] as const).map((k) => (
                <table className="table compact" key={k} data-testid={k === "default" ? "inspect-edit-before" : "inspect-edit-after"}>
                  <thead>
                    <tr>
                      <th>{k === "default" ? "next token, before" : "next token, after the edit"}</th>
                      <th className="num">p</th>
                    </tr>
                  </thead>
                  <tbody>
                    {out.data[k].map((t) => (
                      <tr key={t.id} data-testid="inspect-edit-row" data-token-id={t.id}>
                        <td className="mono">
                          {JSON.stringify(t.token)}
                          {k === "steered" && !before.has(t.id) ? <span className="muted small"> new</span> : null}
                        </td>
                        <td className="num">{t.prob.toFixed(3)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              ))}
            </div>
            <div className="compare" style={{ marginTop: 10 }}>
              {(["default", "steered"] as const).map((k) => (
                <div className="transcript-block" key={k}>
                  <div className="transcript-label">{k === "default" ? "greedy continuation, before" : "greedy continuation, after"}</div>
                  <pre className="transcript">
                    <span
                      className="completion-text"
                      data-testid={k === "default" ? "inspect-edit-default-continuation" : "inspect-edit-steered-continuation"}
                    >
                      {(k === "default" ? out.data.default_continuation : out.data.steered_continuation) ?? ""}
                    </span>
                  </pre>
                </div>
              ))}
            </div>
            <p className="muted small" style={{ marginBottom: 0 }}>
              KL(before ‖ after) = <span data-testid="inspect-edit-kl">{out.data.kl.toFixed(4)}</span> nats · {EDIT_CONTINUE_TOKENS} greedy tokens ·
              round trip <span data-testid="inspect-edit-ms">{Math.round(out.ms)}</span> ms
            </p>
          </div>
        ) : (
          !invalid && <Empty>Computing…</Empty>
        )}
      </Panel>
    </div>
  );
}
