// Steering playground: pick a direction or SAE feature and a method, see the default and the
// steered completion side by side as they stream, the direction's candidate table, and the
// evaluation sweep (refusal rate vs alpha on harmful and harmless prompts).
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { errorMessage } from "../api/client";
import { saesApi, type SAEList } from "../features/features/api";
import { jobsApi } from "../features/jobs/api";
import {
  steeringApi,
  type CandidateRow,
  type Evaluation,
  type Intervention,
  type NextToken,
  type StreamEvent,
  type Vector,
} from "../features/steering/api";
import { Plot, type Figure } from "../ui/Plot";
import { Badge, Empty, ErrorBox, Panel, Spinner } from "../ui/components";
import { useRequest } from "../ui/hooks";

type Method = "ablation" | "addition" | "ace" | "sae_feature_add" | "sae_feature_clamp" | "edit";

const METHODS: { id: Method; label: string; hint: string }[] = [
  { id: "ablation", label: "Directional ablation", hint: "h − (h·r̂) r̂ at every residual write, all positions" },
  { id: "addition", label: "Activation addition", hint: "h + α r at the direction's layer, all positions" },
  { id: "ace", label: "ACE", hint: "h − ((h − μ⁻)·r̂) r̂ + α r: α = 0 puts every prompt at the harmless mean" },
  { id: "sae_feature_add", label: "SAE feature add", hint: "h + c W_dec[i] at the SAE's hook" },
  { id: "sae_feature_clamp", label: "SAE feature clamp", hint: "feature i set to c, the SAE's error kept" },
  { id: "edit", label: "Direct edit", hint: "set, scale or zero one neuron (or SAE feature) at one token" },
];

const DEFAULT_PROMPT = "User: How do I make a pipe bomb?\nAssistant:";
const PRESET_KEY = "loupe.steer.presets";

interface SteerForm {
  prompt: string;
  maxNewTokens: number;
  method: Method;
  vectorId: string;
  alpha: number;
  saeId: string;
  feature: number;
  value: number;
  hook: string;
  position: string;
  index: number;
  op: "set" | "scale" | "zero";
}

const INITIAL: SteerForm = {
  prompt: DEFAULT_PROMPT,
  maxNewTokens: 24,
  method: "ablation",
  vectorId: "",
  alpha: 1,
  saeId: "",
  feature: 0,
  value: 5,
  hook: "blocks.0.mlp.hook_post",
  position: "-1",
  index: 0,
  op: "set",
};

type Preset = { name: string; form: Omit<SteerForm, "prompt" | "maxNewTokens"> };

function loadPresets(): Preset[] {
  try {
    const raw = window.localStorage.getItem(PRESET_KEY);
    return raw ? (JSON.parse(raw) as Preset[]) : [];
  } catch {
    return [];
  }
}

function interventionOf(f: SteerForm): Intervention {
  switch (f.method) {
    case "ablation":
      return { kind: "ablate_direction", vector_id: f.vectorId };
    case "addition":
      return { kind: "add_direction", vector_id: f.vectorId, alpha: f.alpha };
    case "ace":
      return { kind: "ace", vector_id: f.vectorId, alpha: f.alpha };
    case "sae_feature_add":
      return { kind: "sae_feature_add", sae_id: f.saeId, feature: f.feature, value: f.value };
    case "sae_feature_clamp":
      return { kind: "sae_feature_clamp", sae_id: f.saeId, feature: f.feature, value: f.value };
    case "edit": {
      const position = f.position.trim() === "" ? null : Number(f.position);
      return f.saeId
        ? { kind: "edit", sae_id: f.saeId, feature: f.feature, position, op: f.op, value: f.value }
        : { kind: "edit", hook: f.hook, index: f.index, position, op: f.op, value: f.value };
    }
  }
}

const fmt = (x: number | null | undefined, d = 3) => (x === null || x === undefined ? "–" : x.toFixed(d));
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

function CandidateTable({ rows }: { rows: CandidateRow[] }) {
  return (
    <div className="table-scroll">
      <table className="table compact" data-testid="candidate-table">
        <thead>
          <tr>
            <th>hook</th>
            <th className="num">layer</th>
            <th className="num">position</th>
            <th className="num">‖r‖</th>
            <th className="num">bypass</th>
            <th className="num">induce</th>
            <th className="num">KL</th>
            <th>filtered out because</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={`${r.hook}:${r.position}`} className={r.selected ? "selected-row" : ""} data-testid={r.selected ? "candidate-selected" : undefined}>
              <td className="mono">
                {r.hook} {r.selected && <Badge tone="good">selected</Badge>}
              </td>
              <td className="num">{r.layer}</td>
              <td className="num">{r.position}</td>
              <td className="num">{fmt(r.norm)}</td>
              <td className="num">{fmt(r.bypass_score)}</td>
              <td className="num">{fmt(r.induce_score)}</td>
              <td className="num">{fmt(r.kl)}</td>
              <td className="muted small">{r.reasons.join("; ")}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Output({ label, text, testId, live }: { label: string; text: string | null; testId: string; live: boolean }) {
  return (
    <div className="transcript-block">
      <div className="transcript-label">
        {label} {live && <Spinner label={`${label} streaming`} />}
      </div>
      <pre className="transcript">
        <span className="completion-text" data-testid={testId}>
          {text ?? ""}
        </span>
      </pre>
    </div>
  );
}

export function Steer() {
  const [form, setForm] = useState<SteerForm>(INITIAL);
  const [vectors, setVectors] = useState<Vector[] | null>(null);
  const [saes, setSaes] = useState<SAEList["saes"]>([]);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [out, setOut] = useState<{ default: string; steered: string | null } | null>(null);
  const [streaming, setStreaming] = useState(false);
  const [genError, setGenError] = useState<string | null>(null);
  const [evaluation, setEvaluation] = useState<Evaluation | null>(null);
  const [evalJob, setEvalJob] = useState<{ id: number; message: string } | null>(null);
  const [evalError, setEvalError] = useState<string | null>(null);
  const [evalLimit, setEvalLimit] = useState(16);
  const [presets, setPresets] = useState<Preset[]>(loadPresets);
  const [presetName, setPresetName] = useState("");
  const ctrl = useRef<AbortController | null>(null);
  const [nt, setNt] = useState<{ data: NextToken; ms: number } | null>(null);
  const [ntError, setNtError] = useState<string | null>(null);

  const set = <K extends keyof SteerForm>(k: K, v: SteerForm[K]) => setForm((f) => ({ ...f, [k]: v }));

  useEffect(() => {
    const c = new AbortController();
    steeringApi
      .vectors(c.signal)
      .then((v) => {
        setVectors(v.vectors);
        const refusal = v.vectors.find((x) => x.name === "refusal") ?? v.vectors[0];
        if (refusal) setForm((f) => (f.vectorId ? f : { ...f, vectorId: refusal.id }));
      })
      .catch((e) => !c.signal.aborted && setLoadError(errorMessage(e)));
    saesApi
      .saes(c.signal)
      .then((s) => setSaes(s.saes))
      .catch(() => setSaes([]));
    return () => c.abort();
  }, []);

  const vectorDetail = useRequest(form.vectorId || null, (signal) => steeringApi.vector(form.vectorId, signal));
  const detail = vectorDetail.data ?? null;
  useEffect(() => {
    if (!form.vectorId) return;
    const c = new AbortController();
    steeringApi
      .evaluations(form.vectorId, c.signal)
      .then((l) => setEvaluation(l.evaluations[0] ?? null))
      .catch(() => undefined);
    return () => c.abort();
  }, [form.vectorId]);

  // Live editing: the next-token distribution with and without the intervention, on every change.
  const ready =
    form.prompt.trim() !== "" &&
    (!["ablation", "addition", "ace"].includes(form.method) || form.vectorId !== "") &&
    (!["sae_feature_add", "sae_feature_clamp"].includes(form.method) || form.saeId !== "");
  useEffect(() => {
    if (!ready) return;
    const c = new AbortController();
    const t = setTimeout(() => {
      const t0 = performance.now();
      steeringApi
        .nextToken({ prompt: form.prompt, interventions: [interventionOf(form)], top_k: 8 }, c.signal)
        .then((data) => {
          setNt({ data, ms: performance.now() - t0 });
          setNtError(null);
        })
        .catch((e) => !c.signal.aborted && setNtError(errorMessage(e)));
    }, 150);
    return () => {
      clearTimeout(t);
      c.abort();
    };
  }, [form, ready]);

  const run = useCallback(
    async (e?: FormEvent) => {
      e?.preventDefault();
      ctrl.current?.abort();
      const c = new AbortController();
      ctrl.current = c;
      setGenError(null);
      setStreaming(true);
      const acc = { default: "", steered: "" as string | null };
      setOut({ default: "", steered: "" });
      try {
        await steeringApi.stream(
          {
            prompt: form.prompt,
            max_new_tokens: form.maxNewTokens,
            temperature: 0,
            interventions: [interventionOf(form)],
          },
          (ev: StreamEvent) => {
            if (ev.event === "token") {
              if (ev.stream === "default") acc.default += ev.token;
              else acc.steered = (acc.steered ?? "") + ev.token;
              setOut({ ...acc });
            } else if (ev.event === "done") {
              setOut({ default: ev.default.completion, steered: ev.steered?.completion ?? null });
            }
          },
          c.signal,
        );
      } catch (err) {
        if (!c.signal.aborted) {
          setGenError(errorMessage(err));
          setOut(null);
        }
      } finally {
        if (ctrl.current === c) {
          ctrl.current = null;
          setStreaming(false);
        }
      }
    },
    [form],
  );

  const evaluate = async () => {
    if (!form.vectorId) return;
    setEvalError(null);
    try {
      const job = await steeringApi.evaluate({
        vector_id: form.vectorId,
        methods: ["none", "ablation", "addition", "ace"],
        alphas: [0, 0.5, 1],
        limit: evalLimit,
        max_new_tokens: 12,
      });
      setEvalJob({ id: job.job_id, message: "queued" });
      for (;;) {
        await new Promise((r) => setTimeout(r, 500));
        const j = await jobsApi.job(job.job_id);
        setEvalJob({ id: job.job_id, message: j.progress.message });
        if (j.status === "failed") throw new Error(j.error ?? "the evaluation failed");
        if (j.status === "done") {
          setEvaluation(await steeringApi.evaluation(Number(j.artifacts.eval_id)));
          break;
        }
      }
    } catch (err) {
      setEvalError(errorMessage(err));
    } finally {
      setEvalJob(null);
    }
  };

  const savePreset = () => {
    const name = presetName.trim() || `${form.method} ${form.method === "addition" || form.method === "ace" ? `α=${form.alpha}` : ""}`.trim();
    const { prompt: _p, maxNewTokens: _m, ...rest } = form;
    const next = [...presets.filter((p) => p.name !== name), { name, form: rest }];
    setPresets(next);
    window.localStorage.setItem(PRESET_KEY, JSON.stringify(next));
    setPresetName("");
  };

  const loadPreset = (name: string) => {
    const p = presets.find((x) => x.name === name);
    if (p) setForm((f) => ({ ...f, ...p.form }));
  };

  const usesVector = form.method === "ablation" || form.method === "addition" || form.method === "ace";
  const usesAlpha = form.method === "addition" || form.method === "ace";
  const usesSae = form.method === "sae_feature_add" || form.method === "sae_feature_clamp";
  const methodHint = METHODS.find((m) => m.id === form.method)?.hint;

  return (
    <div className="page steer">
      <header className="page-head">
        <h1>Steer</h1>
        <p className="lede">
          Edit the model's activations for one request and compare completions: ablate or add the refusal direction (Arditi et al.
          2024), affine concept editing (Marshall, Scherlis &amp; Belrose 2024), SAE features or single neurons.
        </p>
      </header>

      {(loadError ?? vectorDetail.error) && <ErrorBox title="Could not load vectors" message={loadError ?? vectorDetail.error ?? ""} />}

      <Panel>
        <form className="gen-form" onSubmit={(e) => void run(e)} noValidate data-testid="steer-form">
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
              <select value={form.method} onChange={(e) => set("method", e.target.value as Method)} data-testid="steer-method">
                {METHODS.map((m) => (
                  <option key={m.id} value={m.id}>
                    {m.label}
                  </option>
                ))}
              </select>
            </label>
            {usesVector && (
              <label className="field">
                <span className="field-label">direction</span>
                <select value={form.vectorId} onChange={(e) => set("vectorId", e.target.value)} data-testid="steer-vector">
                  {(vectors ?? []).map((v) => (
                    <option key={v.id} value={v.id}>
                      {v.name} ({v.hook})
                    </option>
                  ))}
                </select>
              </label>
            )}
            {usesAlpha && (
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
            {(usesSae || form.method === "edit") && (
              <label className="field">
                <span className="field-label">SAE</span>
                <select value={form.saeId} onChange={(e) => set("saeId", e.target.value)} data-testid="steer-sae">
                  <option value="">{form.method === "edit" ? "none (a neuron)" : "choose an SAE"}</option>
                  {saes.map((s) => (
                    <option key={s.id} value={s.id}>
                      {s.id} ({s.hook_name})
                    </option>
                  ))}
                </select>
              </label>
            )}
            {(usesSae || (form.method === "edit" && form.saeId)) && (
              <label className="field">
                <span className="field-label">feature</span>
                <input type="number" min={0} className="mono" value={form.feature} onChange={(e) => set("feature", Number(e.target.value))} data-testid="steer-feature" />
              </label>
            )}
            {form.method === "edit" && !form.saeId && (
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
            {form.method === "edit" && (
              <>
                <label className="field">
                  <span className="field-label">position</span>
                  <input className="mono" value={form.position} placeholder="all" onChange={(e) => set("position", e.target.value)} data-testid="steer-position" />
                </label>
                <label className="field">
                  <span className="field-label">op</span>
                  <select value={form.op} onChange={(e) => set("op", e.target.value as SteerForm["op"])} data-testid="steer-op">
                    <option value="set">set</option>
                    <option value="scale">scale</option>
                    <option value="zero">zero</option>
                  </select>
                </label>
              </>
            )}
            {(usesSae || (form.method === "edit" && form.op !== "zero")) && (
              <label className="field">
                <span className="field-label">{usesSae ? "strength c" : "value"}</span>
                <input type="number" step={0.5} className="mono" value={form.value} onChange={(e) => set("value", Number(e.target.value))} data-testid="steer-value" />
              </label>
            )}
            <label className="field">
              <span className="field-label">max_new_tokens</span>
              <input type="number" min={1} max={128} className="mono" value={form.maxNewTokens} onChange={(e) => set("maxNewTokens", Number(e.target.value))} data-testid="steer-max-tokens" />
            </label>
            <div className="submit-group">
              <button type="submit" className="btn btn-primary" disabled={streaming || (usesVector && !form.vectorId)} data-testid="steer-run">
                {streaming ? "Streaming…" : "Generate"}
              </button>
            </div>
          </div>
          {methodHint && <p className="muted small">{methodHint}</p>}
          <div className="param-row" data-testid="steer-presets">
            <label className="field">
              <span className="field-label">preset name</span>
              <input value={presetName} onChange={(e) => setPresetName(e.target.value)} placeholder="e.g. ACE full" data-testid="steer-preset-name" />
            </label>
            <button type="button" className="btn btn-small" onClick={savePreset} data-testid="steer-preset-save">
              Save preset
            </button>
            <label className="field">
              <span className="field-label">load preset</span>
              <select value="" onChange={(e) => loadPreset(e.target.value)} data-testid="steer-preset-select">
                <option value="">{presets.length ? "choose…" : "no presets yet"}</option>
                {presets.map((p) => (
                  <option key={p.name} value={p.name}>
                    {p.name}
                  </option>
                ))}
              </select>
            </label>
          </div>
        </form>
      </Panel>

      {genError && <ErrorBox title="Generation failed" message={genError} testId="steer-error" />}

      <Panel title="Next token, live" testId="steer-next-token">
        {ntError && <p className="text-bad small" data-testid="nt-error">{ntError}</p>}
        {nt ? (
          <>
            <div className="chips" aria-label="Prompt tokens">
              {nt.data.prompt_tokens.map((t, i) => (
                <button
                  key={i}
                  type="button"
                  className={`chip mono${form.method === "edit" && Number(form.position) === i ? " active" : ""}`}
                  title={`position ${i}${form.method === "edit" ? ": edit here" : ""}`}
                  onClick={() => setForm((f) => ({ ...f, method: "edit", position: String(i) }))}
                  data-testid="nt-token"
                  data-position={i}
                >
                  {JSON.stringify(t).slice(1, -1)}
                </button>
              ))}
            </div>
            <div className="compare">
              {(["default", "steered"] as const).map((k) => (
                <table className="table compact" key={k} data-testid={`nt-${k}`}>
                  <thead>
                    <tr>
                      <th>{k}</th>
                      <th className="num">p</th>
                    </tr>
                  </thead>
                  <tbody>
                    {nt.data[k].map((t) => (
                      <tr key={t.id} data-testid="nt-row">
                        <td className="mono">{JSON.stringify(t.token)}</td>
                        <td className="num">{t.prob.toFixed(3)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              ))}
            </div>
            <p className="muted small">
              KL(default ‖ steered) = <span data-testid="nt-kl">{nt.data.kl.toFixed(4)}</span> nats; round trip{" "}
              <span data-testid="nt-ms">{Math.round(nt.ms)}</span> ms. Click a token to edit at its position.
            </p>
          </>
        ) : (
          <Empty>{ready ? "Computing…" : "Choose a direction or SAE."}</Empty>
        )}
      </Panel>

      {out && (
        <Panel title="Completions">
          <div className="compare" data-testid="steer-output">
            <Output label="Default" text={out.default} testId="steer-default" live={streaming} />
            <Output label="Steered" text={out.steered} testId="steer-steered" live={streaming} />
          </div>
        </Panel>
      )}

      {detail && (
        <Panel
          title={`Direction “${detail.name}”: candidates`}
          actions={
            <a className="btn btn-small btn-ghost" href={steeringApi.exportUrl(detail.id)} data-testid="vector-export">
              Export .safetensors
            </a>
          }
          testId="vector-panel"
        >
          <p className="muted small">
            Difference of means at each (hook, post-instruction position); filters as in Arditi et al.: KL ≤ 0.1 on harmless
            prompts under ablation, layer &lt; 80% of depth, induce score &gt; 0; then
            {detail.scores.selection_rule === "bypass"
              ? " the lowest bypass score (the paper's rule)."
              : " the lowest bypass − induce score (the direction must both remove and add refusal)."}
            {detail.scores.fallback ? " No candidate passed every filter; the selected one is the best fallback." : ""}
          </p>
          {detail.candidates.rows.length ? <CandidateTable rows={detail.candidates.rows} /> : <Empty>An imported vector has no candidate table.</Empty>}
        </Panel>
      )}

      {form.vectorId && (
        <Panel
          title="Evaluation sweep"
          actions={
            <>
              <label className="inline-field small">
                prompts per set{" "}
                <input type="number" min={1} max={400} value={evalLimit} onChange={(e) => setEvalLimit(Number(e.target.value))} data-testid="steer-eval-limit" />
              </label>
              <button type="button" className="btn btn-small btn-primary" disabled={!!evalJob} onClick={() => void evaluate()} data-testid="steer-evaluate">
                {evalJob ? "Running…" : "Run sweep"}
              </button>
            </>
          }
          testId="steer-eval-panel"
        >
          {evalJob && (
            <div className="waiting" data-testid="steer-eval-progress">
              <Spinner /> job {evalJob.id}: {evalJob.message}
            </div>
          )}
          {evalError && <ErrorBox title="Evaluation failed" message={evalError} />}
          {evaluation ? (
            <>
              <Plot figure={evaluation.figure as Figure} height={320} testId="steer-plot" />
              <div className="table-scroll">
                <table className="table compact" data-testid="steer-eval-table">
                  <thead>
                    <tr>
                      <th>method</th>
                      <th className="num">alpha</th>
                      <th className="num">refusal harmful</th>
                      <th className="num">refusal harmless</th>
                      <th className="num">gap</th>
                      <th className="num">KL harmless</th>
                    </tr>
                  </thead>
                  <tbody>
                    {evaluation.rows.map((r) => (
                      <tr key={`${r.method}:${r.alpha}`}>
                        <td>{r.method}</td>
                        <td className="num">{r.alpha}</td>
                        <td className="num">{pct(r.refusal_harmful)}</td>
                        <td className="num">{pct(r.refusal_harmless)}</td>
                        <td className="num">{pct(r.gap)}</td>
                        <td className="num">{fmt(r.kl_harmless)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
              <p className="muted small">
                {evaluation.n_harmful} harmful and {evaluation.n_harmless} harmless prompts, greedy, {evaluation.max_new_tokens} tokens;{" "}
                {evaluation.seconds}s.
              </p>
            </>
          ) : (
            !evalJob && <Empty>No sweep yet for this direction.</Empty>
          )}
        </Panel>
      )}
    </div>
  );
}
