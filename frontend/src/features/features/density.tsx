// Feature densities (fraction of tokens a feature fires on): percent text and a log-scale bar.

/** Density as a percent with enough digits to tell small densities apart. */
export function formatDensity(d: number): string {
  if (!Number.isFinite(d)) return "—";
  if (d === 0) return "0%";
  const pct = d * 100;
  return `${pct >= 10 ? pct.toFixed(1) : pct >= 1 ? pct.toFixed(2) : pct >= 0.01 ? pct.toFixed(3) : pct.toExponential(1)}%`;
}

/** Position of a density on a log scale from 1e-5 to 1 (0..1), for the small bars. */
export function logDensity(d: number): number {
  if (!(d > 0)) return 0;
  return Math.min(1, Math.max(0.02, (Math.log10(d) + 5) / 5));
}

/** A small bar, its length the density on a log scale (dense features, over 10%, stand out). */
export function LogDensityBar({ density }: { density: number }) {
  return (
    <span className="density-bar" aria-hidden title="log scale, 0.001% to 100%">
      <span style={{ width: `${(logDensity(density) * 100).toFixed(1)}%` }} className={density > 0.1 ? "dense" : ""} />
    </span>
  );
}

export function DensityBar({ density }: { density: number }) {
  return (
    <div className="density-cell">
      <span className="num-text">{formatDensity(density)}</span>
      <LogDensityBar density={density} />
    </div>
  );
}
