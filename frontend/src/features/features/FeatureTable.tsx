import { useMemo } from "react";
import { ErrorBox, Panel, Spinner } from "../../ui/components";
import { formatFloat, formatInt, formatPercent } from "../../ui/format";
import { useRequest } from "../../ui/hooks";
import { Link, navigate } from "../../ui/router";
import { saesApi, type FeatureQuery, type SAE } from "./api";
import { StaleLabel } from "./dashboard/LabelEditor";
import { DensityBar } from "./density";
import { FeatureFilters } from "./FeatureFilters";
import { domainsOf } from "./saeMetrics";
import { featureUrl, type FeaturesUrl, type SetFeaturesUrl, type SortKey } from "./url";

const PAGE_SIZES = [25, 50, 100, 200];

const COLUMNS: { key: SortKey | null; label: string; num?: boolean; firstOrder?: "asc" | "desc" }[] = [
  { key: "index", label: "#", num: true, firstOrder: "asc" },
  { key: null, label: "label" },
  { key: "density", label: "density", firstOrder: "desc" },
  { key: "max_activation", label: "max act", num: true, firstOrder: "desc" },
  { key: "capacity", label: "capacity", num: true, firstOrder: "desc" },
  { key: "top_domain_share", label: "top domain", firstOrder: "desc" },
];

/** The SAE's features, a page at a time: server-side sort, search and filters, all from the URL. */
export function FeatureTable({ sae, url, set }: { sae: SAE; url: FeaturesUrl; set: SetFeaturesUrl }) {
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
  const open = (index: number) => navigate(featureUrl(sae.id, index));

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
                  <Link to={featureUrl(sae.id, f.index)} data-testid="feature-link">
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
                  {f.stale_label && (
                    <>
                      {" "}
                      <StaleLabel stale={f.stale_label} />
                    </>
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
