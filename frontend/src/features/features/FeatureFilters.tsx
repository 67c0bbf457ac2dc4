import { useEffect, useEffectEvent, useState, type KeyboardEvent } from "react";
import type { FeaturesUrl, SetFeaturesUrl } from "./url";

const fracToPct = (s: string) => (s === "" ? "" : String(+(Number(s) * 100).toPrecision(6)));

/** Search (debounced into the URL), top-domain filter, density bounds in percent, quick density filters. */
export function FeatureFilters({ url, set, domains }: { url: FeaturesUrl; set: SetFeaturesUrl; domains: string[] }) {
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
