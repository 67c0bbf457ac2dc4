// /features/{saeId}/{index}: one feature's dashboard (after Neuronpedia's feature page and the
// Towards Monosemanticity browser): label, stats, histogram, top examples, interval samples,
// enrichment, logit effects, neighbours, neurons, and the feature on text of your own.
import { useState, type FormEvent } from "react";
import { errorMessage } from "../api/client";
import { saesApi, type ActivationsResponse, type Dashboard, type Example } from "../features/features/api";
import { Plot, type Figure } from "../ui/Plot";
import { TokenText, showToken } from "../ui/Tokens";
import { Badge, Empty, ErrorBox, Panel, Spinner } from "../ui/components";
import { formatFloat, formatInt, formatPercent } from "../ui/format";
import { useDocumentTitle, useRequest } from "../ui/hooks";
import { Link } from "../ui/router";
import { formatDensity, logDensity } from "../features/features/density";
import { featuresUrl, featureUrl } from "../features/features/url";

type Pair = [number, number];
type Logit = [number, string, number];
interface Summary {
  tokens?: { id: number; token: string; share: number; lift: number }[];
  domains?: { name: string; share: number; lift: number }[];
  neighbours?: Pair[];
  logits?: { top: Logit[]; bottom: Logit[] };
  neurons_reads?: { top: Pair[]; bottom: Pair[] };
  neurons_writes?: { top: Pair[]; bottom: Pair[] };
}


function ExampleRow({ ex, max, testId = "top-example" }: { ex: Example; max: number; testId?: string }) {
  return (
    <div className="example" data-testid={testId}>
      <span className="example-act num" title="activation at the example's token">
        {ex.activation.toFixed(2)}
      </span>
      <TokenText tokens={ex.tokens} max={max} center={ex.center} />
    </div>
  );
}

function LabelEditor({ d, onSaved }: { d: Dashboard; onSaved: (label: string | null) => void }) {
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
  const save = async (e: FormEvent) => {
    e.preventDefault();
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
    <form className="label-editor" onSubmit={(e) => void save(e)}>
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

function PairTable({ rows, head, testId }: { rows: Pair[]; head: [string, string]; testId: string }) {
  const mx = Math.max(1e-9, ...rows.map(([, v]) => Math.abs(v)));
  return (
    <table className="table compact" data-testid={testId}>
      <thead>
        <tr>
          <th>{head[0]}</th>
          <th className="num">{head[1]}</th>
          <th className="bar-col" />
        </tr>
      </thead>
      <tbody>
        {rows.map(([n, v]) => (
          <tr key={n}>
            <td className="mono">{n}</td>
            <td className="num">{v.toFixed(3)}</td>
            <td className="bar-col">
              <div className="mini-bar">
                <div className={v < 0 ? "neg" : ""} style={{ width: `${((Math.abs(v) / mx) * 100).toFixed(1)}%` }} />
              </div>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function LogitColumn({ rows, sign, testId }: { rows: Logit[]; sign: "pos" | "neg"; testId: string }) {
  return (
    <div className="logit-col" data-testid={testId}>
      <h3 className="sub-head">{sign === "pos" ? "Positive logits" : "Negative logits"}</h3>
      {rows.length === 0 && <Empty>none</Empty>}
      <ul className="logit-list">
        {rows.map(([id, tok, v]) => (
          <li key={id} className={`logit logit-${sign}`}>
            <span className="logit-tok mono" title={`token id ${id}`}>
              {showToken(tok)}
            </span>
            <span className="num small">{v >= 0 ? "+" : ""}{v.toFixed(4)}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}

function TryText({ d }: { d: Dashboard }) {
  const [text, setText] = useState("");
  const [res, setRes] = useState<ActivationsResponse | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const run = async (e: FormEvent) => {
    e.preventDefault();
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
      <form className="try-form" onSubmit={(e) => void run(e)}>
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

export function FeaturePage({ saeId, index }: { saeId: string; index: number }) {
  useDocumentTitle(`${saeId} #${index}`);
  const { data, error, loading, setData } = useRequest(`${saeId}/${index}`, (signal) => saesApi.feature(saeId, index, signal));
  const cur = data ?? null;
  const nav = (
    <div className="feature-nav">
      <Link to={featuresUrl({ sae: saeId })} className="btn btn-small btn-ghost" data-testid="back-to-features">
        ← all features
      </Link>
      {index > 0 ? (
        <Link to={featureUrl(saeId, index - 1)} className="btn btn-small" data-testid="prev-feature" aria-label="previous feature">
          ‹ #{index - 1}
        </Link>
      ) : (
        <button type="button" className="btn btn-small" disabled aria-label="previous feature">‹</button>
      )}
      {!cur || index < cur.d_sae - 1 ? (
        <Link to={featureUrl(saeId, index + 1)} className="btn btn-small" data-testid="next-feature" aria-label="next feature">
          #{index + 1} ›
        </Link>
      ) : (
        <button type="button" className="btn btn-small" disabled aria-label="next feature">›</button>
      )}
    </div>
  );

  if (error && !cur) {
    return (
      <div className="page" data-testid="feature-page">
        <header className="page-head feature-head">
          <h1>
            Feature <span className="mono">#{index}</span> <span className="muted small mono">{saeId}</span>
          </h1>
          {nav}
        </header>
        <ErrorBox title="Could not load this feature" message={error} />
      </div>
    );
  }
  if (!cur) {
    return (
      <div className="page" data-testid="feature-page">
        <header className="page-head feature-head">
          <h1>
            Feature <span className="mono">#{index}</span>
          </h1>
          {nav}
        </header>
        <Spinner label="Loading feature" />
      </div>
    );
  }

  const s = (cur.summary ?? {}) as Summary;
  const max = cur.max_activation;
  return (
    <div className={`page${loading ? " stale" : ""}`} data-testid="feature-page" data-sae-id={cur.sae_id} data-index={cur.index}>
      <header className="page-head feature-head">
        <div>
          <div className="crumbs small">
            <Link to={featuresUrl({ sae: cur.sae_id })}>{cur.sae_id}</Link> <span className="muted">· {cur.hook_name} · {formatInt(cur.d_sae)} features</span>
          </div>
          <h1 data-testid="feature-title">
            Feature <span className="mono">#{cur.index}</span>{" "}
            <span className="feature-title-label" data-testid="feature-display-label">
              {cur.label ? cur.label : <span className="mono muted">{cur.auto_label}</span>}
            </span>
          </h1>
        </div>
        {nav}
      </header>

      <Panel testId="feature-summary">
        <LabelEditor key={`${cur.sae_id}/${cur.index}`} d={cur} onSaved={(label) => setData({ ...cur, label })} />
        <dl className="metric-grid feature-stats">
          <div className="metric" data-testid="stat-density">
            <dt>density</dt>
            <dd>{formatDensity(cur.density)}</dd>
            <span className="density-bar" aria-hidden title="log scale, 0.001% to 100%">
              <span style={{ width: `${(logDensity(cur.density) * 100).toFixed(1)}%` }} className={cur.density > 0.1 ? "dense" : ""} />
            </span>
          </div>
          <div className="metric" data-testid="stat-max">
            <dt>max activation</dt>
            <dd>{formatFloat(cur.max_activation, 3)}</dd>
          </div>
          <div className="metric" data-testid="stat-mean">
            <dt>mean activation (when active)</dt>
            <dd>{formatFloat(cur.mean_activation, 3)}</dd>
          </div>
          <div className="metric" data-testid="stat-capacity" title="Scherlis et al.: (W_i·W_i)² / Σ_j (W_i·W_j)², 1 = a dimension of its own">
            <dt>capacity</dt>
            <dd>{formatFloat(cur.capacity, 3)}</dd>
          </div>
          <div className="metric" data-testid="stat-domain">
            <dt>top domain</dt>
            <dd>
              {cur.top_domain ?? "—"} {cur.top_domain_share != null && <span className="muted small">{formatPercent(cur.top_domain_share, 0)}</span>}
            </dd>
          </div>
        </dl>
      </Panel>

      <div className="feature-grid">
        <div className="feature-main">
          <Panel title="Activation histogram" testId="histogram-panel">
            <Plot figure={cur.histogram.figure as Figure} height={240} testId="feature-histogram" />
          </Panel>
          <Panel title={`Top activations (${cur.top_examples.length})`} testId="top-examples">
            {cur.top_examples.length === 0 ? (
              <Empty>This feature never fired on the dashboard tokens.</Empty>
            ) : (
              <div className="examples">
                {cur.top_examples.map((ex, i) => (
                  <ExampleRow key={i} ex={ex} max={max} />
                ))}
              </div>
            )}
          </Panel>
          <Panel title="Activation intervals" testId="intervals">
            {cur.intervals.every((iv) => iv.examples.length === 0) && <Empty>No samples.</Empty>}
            {cur.intervals
              .filter((iv) => iv.examples.length > 0)
              .map((iv) => (
                <section key={iv.bin} className="interval" data-testid="interval" data-bin={iv.bin}>
                  <h3 className="sub-head">
                    Interval {iv.bin + 1}: {iv.low.toFixed(2)} – {iv.high.toFixed(2)}{" "}
                    <span className="muted">· {formatPercent(iv.share, 1)} of activations</span>
                  </h3>
                  <div className="examples">
                    {iv.examples.map((ex, i) => (
                      <ExampleRow key={i} ex={ex} max={max} testId="interval-example" />
                    ))}
                  </div>
                </section>
              ))}
          </Panel>
          <TryText d={cur} />
        </div>

        <div className="feature-side">
          <Panel title="Logit effects" testId="logit-effects">
            <div className="logit-cols">
              <LogitColumn rows={s.logits?.top ?? []} sign="pos" testId="logits-positive" />
              <LogitColumn rows={s.logits?.bottom ?? []} sign="neg" testId="logits-negative" />
            </div>
          </Panel>
          <Panel title="Enriched tokens" testId="enriched-tokens">
            {(s.tokens ?? []).length === 0 ? (
              <Empty>none</Empty>
            ) : (
              <table className="table compact">
                <thead>
                  <tr>
                    <th>token</th>
                    <th className="num" title="share of this feature's activation mass">share</th>
                    <th className="num" title="share relative to the token's frequency">lift</th>
                  </tr>
                </thead>
                <tbody>
                  {(s.tokens ?? []).map((t) => (
                    <tr key={t.id}>
                      <td>
                        <span className="tok-chip mono">{showToken(t.token)}</span>
                      </td>
                      <td className="num">{formatPercent(t.share, 1)}</td>
                      <td className="num">{t.lift.toFixed(1)}×</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Panel>
          <Panel title="Domains" testId="enriched-domains">
            {(s.domains ?? []).length === 0 ? (
              <Empty>none</Empty>
            ) : (
              <table className="table compact">
                <thead>
                  <tr>
                    <th>domain</th>
                    <th className="num">share</th>
                    <th className="num">lift</th>
                  </tr>
                </thead>
                <tbody>
                  {(s.domains ?? []).map((t) => (
                    <tr key={t.name}>
                      <td className="mono">{t.name}</td>
                      <td className="num">{formatPercent(t.share, 1)}</td>
                      <td className="num">{t.lift.toFixed(1)}×</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Panel>
          <Panel title="Nearest features (decoder cosine)" testId="neighbours">
            {(s.neighbours ?? []).length === 0 ? (
              <Empty>none</Empty>
            ) : (
              <ul className="neighbour-list">
                {(s.neighbours ?? []).map(([n, c]) => (
                  <li key={n}>
                    <Link to={featureUrl(cur.sae_id, n)} data-testid="neighbour-link">
                      #{n}
                    </Link>
                    <span className="neighbour-label mono small">{cur.neighbour_labels?.[String(n)] ?? ""}</span>
                    <span className="num small">{c.toFixed(3)}</span>
                  </li>
                ))}
              </ul>
            )}
          </Panel>
          <Panel
            title="Neurons"
            testId="feature-neurons"
            actions={
              <Link to={featuresUrl({ sae: cur.sae_id, view: "neurons" })} className="small" data-testid="polysemanticity-link">
                polysemanticity view
              </Link>
            }
          >
            {!s.neurons_reads && !s.neurons_writes && <Empty>No neuron weights for this hook.</Empty>}
            {s.neurons_reads && (
              <>
                <h3 className="sub-head">Reads from</h3>
                <PairTable rows={[...s.neurons_reads.top.slice(0, 5), ...s.neurons_reads.bottom.slice(0, 3)]} head={["neuron", "weight"]} testId="neurons-reads" />
              </>
            )}
            {s.neurons_writes && (
              <>
                <h3 className="sub-head">Writes to</h3>
                <PairTable rows={[...s.neurons_writes.top.slice(0, 5), ...s.neurons_writes.bottom.slice(0, 3)]} head={["neuron", "weight"]} testId="neurons-writes" />
              </>
            )}
          </Panel>
        </div>
      </div>
    </div>
  );
}
