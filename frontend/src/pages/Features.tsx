// /features: the SAE picker with quality metrics, the feature table (server-side sort, search,
// filters, pages) and each SAE's neuron polysemanticity. All state lives in the URL.
import { useEffect, useEffectEvent, useMemo, useState, type KeyboardEvent, type ReactNode } from "react";
import { errorMessage } from "../api/client";
import { saesApi, type FeatureQuery, type SAE } from "../features/features/api";
import { DensityBar } from "../features/features/density";
import { featuresUrl, parseFeaturesUrl, type FeaturesUrl, type SortKey } from "../features/features/url";
import { Plot, type Figure } from "../ui/Plot";
import { Badge, Empty, ErrorBox, Panel, Spinner } from "../ui/components";
import { formatFloat, formatInt, formatPercent } from "../ui/format";
import { useDocumentTitle, usePolling, useRequest } from "../ui/hooks";
import { Link, navigate, replaceUrl, useSearch } from "../ui/router";

// ---------------------------------------------------------------------------------------------
// SAE picker and quality

type Target = { value: number; target: string; met: boolean };

const METRICS: { key: string; label: string; fmt: (v: number) => string; help: string }[] = [
  { key: "fvu", label: "FVU", fmt: (v) => formatFloat(v, 3), help: "fraction of variance unexplained on held-out tokens" },
  { key: "l0", label: "L0", fmt: (v) => formatFloat(v, 1), help: "mean number of active features per token" },
  { key: "dead_fraction", label: "Dead", fmt: (v) => formatPercent(v, 1), help: "features that never fire on held-out tokens" },
  { key: "dense_fraction", label: "Dense", fmt: (v) => formatPercent(v, 1), help: "features firing on more than 10% of tokens" },
  {
    key: "ce_loss_recovered",
    label: "CE loss recovered",
    fmt: (v) => formatPercent(v, 1),
    help: "loss with the reconstruction spliced in, relative to zero-ablation",
  },
  { key: "planted_domains_detected", label: "Domains detected", fmt: (v) => formatInt(v), help: "planted domains with a feature of AUROC ≥ 0.95" },
];

function targetsOf(sae: SAE): Record<string, Target> {
  const t = (sae.metrics as Record<string, unknown>).targets;
  return t && typeof t === "object" ? (t as Record<string, Target>) : {};
}

function domainsOf(sae: SAE): { name: string; feature: number; auroc: number }[] {
  const d = (sae.metrics as Record<string, unknown>).domains;
  if (!d || typeof d !== "object") return [];
  return Object.entries(d as Record<string, { feature: number; auroc: number }>)
    .map(([name, v]) => ({ name, feature: v.feature, auroc: v.auroc }))
    .sort((a, b) => b.auroc - a.auroc);
}

function DashboardState({ sae }: { sae: SAE }) {
  const st = sae.dashboards;
  if (st.state === "ready") return <Badge tone="good">dashboards ready</Badge>;
  if (st.state === "failed") return <Badge tone="bad">dashboards failed</Badge>;
  if (st.state === "building")
    return <Badge tone="info">building {st.progress != null ? formatPercent(st.progress, 0) : "…"}</Badge>;
  return <Badge tone="warn">dashboards pending</Badge>;
}

function SAEPicker({ saes, selected, onSelect }: { saes: SAE[]; selected: string; onSelect: (id: string) => void }) {
  return (
    <div className="sae-picker" role="tablist" aria-label="SAEs">
      {saes.map((s) => {
        const t = targetsOf(s);
        const met = Object.values(t).filter((x) => x.met).length;
        const n = Object.keys(t).length;
        return (
          <button
            key={s.id}
            type="button"
            role="tab"
            aria-selected={s.id === selected}
            className={`sae-card${s.id === selected ? " active" : ""}`}
            onClick={() => onSelect(s.id)}
            data-testid="sae-card"
            data-sae-id={s.id}
          >
            <span className="sae-card-id mono">{s.id}</span>
            <span className="sae-card-hook mono">{s.hook_name}</span>
            <span className="sae-card-meta">
              {s.architecture} · d_sae {formatInt(s.d_sae)} · d_in {formatInt(s.d_in)}
            </span>
            <span className="sae-card-badges">
              {n > 0 && <Badge tone={met === n ? "good" : "warn"}>{`${met}/${n} targets met`}</Badge>}
              <DashboardState sae={s} />
            </span>
          </button>
        );
      })}
    </div>
  );
}

function Quality({ sae }: { sae: SAE }) {
  const m = sae.metrics as Record<string, unknown>;
  const targets = targetsOf(sae);
  const domains = domainsOf(sae);
  if (Object.keys(m).length === 0) {
    return (
      <Panel title="Quality" testId="sae-quality">
        <Empty>Not evaluated yet (run `loupe eval saes`).</Empty>
      </Panel>
    );
  }
  return (
    <Panel
      title="Quality"
      testId="sae-quality"
      actions={typeof m.eval_tokens === "number" ? <span className="muted small">on {formatInt(m.eval_tokens)} held-out tokens</span> : null}
    >
      <dl className="metric-grid">
        {METRICS.map(({ key, label, fmt, help }) => {
          const v = m[key];
          const t = targets[key];
          return (
            <div className="metric" key={key} data-testid={`sae-metric-${key}`} title={help}>
              <dt>{label}</dt>
              <dd>
                {typeof v === "number" ? fmt(v) : "—"}
              </dd>
              <div className="metric-target">
                {t ? (
                  <>
                    <span className="muted small mono">target {t.target}</span>
                    <Badge tone={t.met ? "good" : "bad"} testId={t.met ? "target-met" : "target-unmet"}>
                      {t.met ? "met" : "not met"}
                    </Badge>
                  </>
                ) : (
                  <span className="muted small">no target</span>
                )}
              </div>
            </div>
          );
        })}
      </dl>
      {domains.length > 0 && (
        <details className="auroc-details" open>
          <summary>Best single feature per planted domain (AUROC as a detector of the domain’s tokens)</summary>
          <div className="table-scroll">
            <table className="table auroc-table" data-testid="domain-auroc-table">
              <thead>
                <tr>
                  <th>domain</th>
                  <th>best feature</th>
                  <th className="num">AUROC</th>
                  <th className="bar-col" aria-label="AUROC bar" />
                  <th />
                </tr>
              </thead>
              <tbody>
                {domains.map((d) => (
                  <tr key={d.name} data-testid="domain-auroc-row" data-domain={d.name}>
                    <td className="mono">{d.name}</td>
                    <td>
                      <Link to={`/features/${encodeURIComponent(sae.id)}/${d.feature}`} data-testid="domain-feature-link">
                        #{d.feature}
                      </Link>
                    </td>
                    <td className="num">{d.auroc.toFixed(3)}</td>
                    <td className="bar-col">
                      <div className="mini-bar">
                        <div style={{ width: `${Math.max(0, (d.auroc - 0.5) * 200).toFixed(1)}%` }} className={d.auroc >= 0.95 ? "good" : ""} />
                      </div>
                    </td>
                    <td>{d.auroc >= 0.95 ? <Badge tone="good">detected</Badge> : null}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </details>
      )}
    </Panel>
  );
}

function NotReady({ sae }: { sae: SAE }) {
  const st = sae.dashboards;
  const pct = st.progress != null ? Math.round(st.progress * 100) : null;
  return (
    <Panel title="Features" testId="dashboards-status">
      <div className="not-ready">
        <div>
          {st.state === "failed" ? (
            <ErrorBox title="Building the dashboards failed" message={st.message ?? "see the job on the Overview page"} />
          ) : (
            <span className="waiting">
              <Spinner label="Waiting for dashboards" />
              {st.state === "pending" ? "Dashboards are queued." : "Building dashboards…"} {st.message && <span className="muted">{st.message}</span>}
            </span>
          )}
        </div>
        {st.state === "building" && (
          <div
            className={`progress${pct === null ? " progress-indeterminate" : ""}`}
            role="progressbar"
            aria-valuemin={0}
            aria-valuemax={100}
            aria-valuenow={pct ?? undefined}
            data-testid="dashboards-progress"
          >
            <div className="progress-fill" style={pct === null ? undefined : { width: `${pct}%` }} />
          </div>
        )}
        <p className="hint">This page refreshes by itself; the table appears when the dashboards are built.</p>
      </div>
    </Panel>
  );
}

// ---------------------------------------------------------------------------------------------
// feature table

const PAGE_SIZES = [25, 50, 100, 200];

const COLUMNS: { key: SortKey | null; label: string; num?: boolean; firstOrder?: "asc" | "desc" }[] = [
  { key: "index", label: "#", num: true, firstOrder: "asc" },
  { key: null, label: "label" },
  { key: "density", label: "density", firstOrder: "desc" },
  { key: "max_activation", label: "max act", num: true, firstOrder: "desc" },
  { key: "capacity", label: "capacity", num: true, firstOrder: "desc" },
  { key: "top_domain_share", label: "top domain", firstOrder: "desc" },
];

const fracToPct = (s: string) => (s === "" ? "" : String(+(Number(s) * 100).toPrecision(6)));

function FeatureFilters({ url, set, domains }: { url: FeaturesUrl; set: (p: Partial<FeaturesUrl>, replace?: boolean) => void; domains: string[] }) {
  const [q, setQ] = useState(url.q);
  const [min, setMin] = useState(url.min === "" ? "" : String(Number(url.min) * 100));
  const [max, setMax] = useState(url.max === "" ? "" : String(Number(url.max) * 100));

  // Follow the URL when it changes from outside (back button, quick filters): the inputs are
  // reset while rendering, when the URL's values differ from the ones last seen.
  const [seen, setSeen] = useState({ q: url.q, min: url.min, max: url.max });
  if (seen.q !== url.q || seen.min !== url.min || seen.max !== url.max) {
    setSeen({ q: url.q, min: url.min, max: url.max });
    if (seen.q !== url.q) setQ(url.q);
    if (seen.min !== url.min) setMin(fracToPct(url.min));
    if (seen.max !== url.max) setMax(fracToPct(url.max));
  }

  // Typing updates the URL (and so the table) after a short pause, without history entries.
  const search = useEffectEvent((value: string) => set({ q: value, offset: 0 }, true));
  useEffect(() => {
    if (q === url.q) return;
    const id = setTimeout(() => search(q), 250);
    return () => clearTimeout(id);
  }, [q, url.q]);

  const pctToFrac = (s: string) => {
    const v = Number(s);
    return s.trim() === "" || !Number.isFinite(v) ? "" : String(Math.min(1, Math.max(0, v / 100)));
  };
  const applyDensity = () => set({ min: pctToFrac(min), max: pctToFrac(max), offset: 0 });
  // Enter applies (two inputs and no submit button: a form would not submit implicitly).
  const onDensityKey = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === "Enter") {
      e.preventDefault();
      applyDensity();
    }
  };
  const quick = url.max === "0" && url.min === "" ? "dead" : url.min === "0.1" && url.max === "" ? "dense" : url.min === "" && url.max === "" ? "all" : "";

  return (
    <div className="filters">
      <label className="field grow">
        <span className="field-label">search labels and tokens</span>
        <input type="search" value={q} onChange={(e) => setQ(e.target.value)} placeholder="e.g. dna, http, ' the'" data-testid="feature-search" />
      </label>
      <label className="field">
        <span className="field-label">top domain</span>
        <select value={url.domain} onChange={(e) => set({ domain: e.target.value, offset: 0 })} data-testid="domain-filter">
          <option value="">all domains</option>
          {domains.map((d) => (
            <option key={d} value={d}>
              {d}
            </option>
          ))}
        </select>
      </label>
      <div className="density-range">
        <label className="field">
          <span className="field-label">density ≥ %</span>
          <input type="number" min={0} max={100} step="any" value={min} onChange={(e) => setMin(e.target.value)} onBlur={applyDensity} onKeyDown={onDensityKey} data-testid="density-min" />
        </label>
        <label className="field">
          <span className="field-label">density ≤ %</span>
          <input type="number" min={0} max={100} step="any" value={max} onChange={(e) => setMax(e.target.value)} onBlur={applyDensity} onKeyDown={onDensityKey} data-testid="density-max" />
        </label>
      </div>
      <div className="quick-filters" role="group" aria-label="Quick density filters">
        <button type="button" className={`btn btn-small btn-preset${quick === "all" ? " active" : ""}`} onClick={() => set({ min: "", max: "", offset: 0 })} data-testid="filter-all">
          all
        </button>
        <button type="button" className={`btn btn-small btn-preset${quick === "dead" ? " active" : ""}`} onClick={() => set({ min: "", max: "0", offset: 0 })} data-testid="filter-dead">
          dead
        </button>
        <button type="button" className={`btn btn-small btn-preset${quick === "dense" ? " active" : ""}`} onClick={() => set({ min: "0.1", max: "", offset: 0 })} data-testid="filter-dense">
          dense &gt;10%
        </button>
      </div>
    </div>
  );
}

function FeatureTable({ sae, url, set }: { sae: SAE; url: FeaturesUrl; set: (p: Partial<FeaturesUrl>, replace?: boolean) => void }) {
  const domains = useMemo(() => domainsOf(sae).map((d) => d.name).sort(), [sae]);
  const params: FeatureQuery = { sort: url.sort, order: url.order, offset: url.offset, limit: url.limit };
  if (url.q.trim()) params.q = url.q.trim();
  if (url.domain) params.domain = url.domain;
  if (url.min !== "") params.min_density = Number(url.min);
  if (url.max !== "") params.max_density = Number(url.max);
  // The last page stays on screen (dimmed) while the next one loads.
  const { latest, error, loading } = useRequest(JSON.stringify([sae.id, params]), (signal) => saesApi.features(sae.id, params, signal));
  const page = latest ?? null;

  const clickSort = (key: SortKey, first: "asc" | "desc") => {
    if (url.sort === key) set({ order: url.order === "asc" ? "desc" : "asc", offset: 0 });
    else set({ sort: key, order: first, offset: 0 });
  };

  const rows = page?.sae_id === sae.id ? page.features : [];
  const total = page?.sae_id === sae.id ? page.total : 0;
  const from = total === 0 ? 0 : url.offset + 1;
  const to = Math.min(total, url.offset + rows.length);
  const open = (index: number) => navigate(`/features/${encodeURIComponent(sae.id)}/${index}`);

  return (
    <Panel
      title={
        <>
          Features {loading && <Spinner label="Loading features" />}
        </>
      }
      className={loading && page ? "stale" : ""}
      testId="feature-table-panel"
      actions={
        <span className="muted small" data-testid="feature-count">
          {page ? `${formatInt(total)} of ${formatInt(sae.d_sae)} features` : ""}
        </span>
      }
    >
      <FeatureFilters url={url} set={set} domains={domains} />
      {error && <ErrorBox title="Could not load features" message={error} />}
      <div className="table-scroll">
        <table className="table feature-table" data-testid="feature-table">
          <thead>
            <tr>
              {COLUMNS.map((c) => {
                const active = c.key !== null && url.sort === c.key;
                return (
                  <th
                    key={c.label}
                    className={c.num ? "num" : undefined}
                    aria-sort={active ? (url.order === "asc" ? "ascending" : "descending") : undefined}
                  >
                    {c.key ? (
                      <button
                        type="button"
                        className={`sort-btn${active ? " active" : ""}`}
                        onClick={() => clickSort(c.key as SortKey, c.firstOrder ?? "desc")}
                        data-testid={`sort-${c.key}`}
                        title={`sort by ${c.label}`}
                      >
                        {c.label}
                        <span className="sort-arrow" aria-hidden>
                          {active ? (url.order === "asc" ? "▲" : "▼") : "↕"}
                        </span>
                      </button>
                    ) : (
                      c.label
                    )}
                  </th>
                );
              })}
            </tr>
          </thead>
          <tbody>
            {rows.length === 0 && !loading && (
              <tr>
                <td colSpan={COLUMNS.length} className="empty-row muted">
                  No features match.
                </td>
              </tr>
            )}
            {rows.map((f) => (
              <tr
                key={f.index}
                className="clickable"
                onClick={(e) => {
                  if ((e.target as HTMLElement).closest("a")) return;
                  open(f.index);
                }}
                data-testid="feature-row"
                data-index={f.index}
              >
                <td className="num mono">
                  <Link to={`/features/${encodeURIComponent(sae.id)}/${f.index}`} data-testid="feature-link">
                    {f.index}
                  </Link>
                </td>
                <td className="label-cell" data-testid="feature-label">
                  {f.label ? (
                    <>
                      <strong>{f.label}</strong> <span className="muted small mono">{f.auto_label}</span>
                    </>
                  ) : (
                    <span className="mono">{f.auto_label}</span>
                  )}
                </td>
                <td data-testid="feature-density" data-value={f.density}>
                  <DensityBar density={f.density} />
                </td>
                <td className="num">{formatFloat(f.max_activation, 2)}</td>
                <td className="num">{formatFloat(f.capacity, 3)}</td>
                <td>
                  {f.top_domain ? (
                    <>
                      <span className="mono">{f.top_domain}</span>{" "}
                      <span className="muted small">{formatPercent(f.top_domain_share, 0)}</span>
                    </>
                  ) : (
                    <span className="muted">—</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="pager" data-testid="pager">
        <span className="muted small">
          {total > 0 ? `${formatInt(from)}–${formatInt(to)} of ${formatInt(total)}` : ""}
        </span>
        <label className="inline-field">
          <span className="small muted">per page</span>
          <select value={url.limit} onChange={(e) => set({ limit: Number(e.target.value), offset: 0 })} data-testid="page-size">
            {PAGE_SIZES.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <button type="button" className="btn btn-small" disabled={url.offset === 0} onClick={() => set({ offset: Math.max(0, url.offset - url.limit) })} data-testid="page-prev">
          ← previous
        </button>
        <button
          type="button"
          className="btn btn-small"
          disabled={url.offset + url.limit >= total}
          onClick={() => set({ offset: url.offset + url.limit })}
          data-testid="page-next"
        >
          next →
        </button>
      </div>
    </Panel>
  );
}

// ---------------------------------------------------------------------------------------------
// neuron polysemanticity

export function polysemanticityFigure(values: number[], saeId: string): Figure {
  return {
    data: [
      {
        type: "histogram",
        x: values,
        nbinsx: 40,
        marker: { color: "#4f6bed" },
        hovertemplate: "%{x}<br>%{y} neurons<extra></extra>",
      },
    ],
    layout: {
      title: { text: `${saeId}: effective number of features per neuron`, font: { size: 12 } },
      xaxis: { title: { text: "participation ratio of feature loads" } },
      yaxis: { title: { text: "neurons" } },
      bargap: 0.05,
      showlegend: false,
    },
  };
}

function Neurons({ sae }: { sae: SAE }) {
  const { data, error } = useRequest(sae.id, (signal) => saesApi.neurons(sae.id, signal));
  const fig = useMemo(() => (data ? polysemanticityFigure(data.polysemanticity, sae.id) : null), [data, sae.id]);

  return (
    <Panel title="Neuron polysemanticity" testId="neurons-panel">
      {error && <ErrorBox title="No neuron view" message={error} />}
      {!data && !error && <Spinner label="Loading neurons" />}
      {data && (
        <div className="grid-2">
          <div>
            <p className="hint">
              For each neuron of <span className="mono">{data.units ?? sae.hook_name}</span>: the participation ratio (Σ a²)² / Σ a⁴ of live features’ unit
              decoder loads a on it — the effective number of features that load on the neuron (1 if one feature does, k for k equal loads). Mean{" "}
              <strong data-testid="neurons-mean">{data.mean.toFixed(2)}</strong> over {formatInt(data.polysemanticity.length)} neurons.
            </p>
            <Plot figure={fig} testId="neurons-histogram" />
          </div>
          <div>
            <h3 className="sub-head">Most polysemantic neurons</h3>
            <table className="table compact" data-testid="polysemantic-table">
              <thead>
                <tr>
                  <th className="num">neuron</th>
                  <th className="num">effective features</th>
                </tr>
              </thead>
              <tbody>
                {data.most_polysemantic.map(([n, pr]) => (
                  <tr key={n}>
                    <td className="num mono">{n}</td>
                    <td className="num">{pr.toFixed(2)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </div>
      )}
    </Panel>
  );
}

// ---------------------------------------------------------------------------------------------

export function Features() {
  useDocumentTitle("Features");
  const search = useSearch();
  const url = useMemo(() => parseFeaturesUrl(search), [search]);
  const saes = usePolling(saesApi.saes, (d, e) => (e ? 5000 : d && d.saes.length > 0 && d.saes.every((s) => s.dashboards.state === "ready") ? null : 2000));
  const list = saes.data?.saes ?? [];
  const sae = list.find((s) => s.id === url.sae) ?? list[0];

  const set = (patch: Partial<FeaturesUrl>, replace = false) => {
    const next = featuresUrl({ ...url, sae: sae?.id ?? url.sae, ...patch });
    if (next === window.location.pathname + window.location.search) return;
    if (replace) replaceUrl(next);
    else navigate(next);
  };

  let body: ReactNode;
  if (!saes.data && saes.error) body = <ErrorBox title="Could not list SAEs" message={errorMessage(saes.error)} />;
  else if (!saes.data) body = <Spinner label="Loading SAEs" />;
  else if (!sae)
    body = (
      <Panel>
        <Empty>No SAEs yet. The build trains them in the background (see the jobs on the Overview page); this page refreshes by itself.</Empty>
      </Panel>
    );
  else
    body = (
      <>
        {url.sae && url.sae !== sae.id && <ErrorBox title="Unknown SAE" message={`There is no SAE ${url.sae}; showing ${sae.id}.`} />}
        <SAEPicker saes={list} selected={sae.id} onSelect={(id) => navigate(featuresUrl({ sae: id, view: url.view }))} />
        <Quality sae={sae} />
        <div className="view-tabs" role="tablist" aria-label="View">
          <button type="button" role="tab" aria-selected={url.view === "features"} className={`view-tab${url.view === "features" ? " active" : ""}`} onClick={() => set({ view: "features" })} data-testid="view-features">
            Features
          </button>
          <button type="button" role="tab" aria-selected={url.view === "neurons"} className={`view-tab${url.view === "neurons" ? " active" : ""}`} onClick={() => set({ view: "neurons" })} data-testid="view-neurons">
            Neuron polysemanticity
          </button>
        </div>
        {sae.dashboards.state !== "ready" ? (
          <NotReady sae={sae} />
        ) : url.view === "neurons" ? (
          <Neurons sae={sae} />
        ) : (
          <FeatureTable sae={sae} url={url} set={set} />
        )}
      </>
    );

  return (
    <div className="page" data-testid="features-page">
      <header className="page-head">
        <h1>Features</h1>
        <p className="lede">Sparse autoencoder dictionaries of the model’s activations: pick an SAE, then sort, search and open its features.</p>
      </header>
      {body}
    </div>
  );
}
