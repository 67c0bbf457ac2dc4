// Formatting helpers for numbers, dates and durations.

const intFmt = new Intl.NumberFormat("en-US");

export function formatInt(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  return intFmt.format(n);
}

/** 1412352 -> "1.41M" */
export function formatCompact(n: number): string {
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${trim(n / 1e9)}B`;
  if (abs >= 1e6) return `${trim(n / 1e6)}M`;
  if (abs >= 1e3) return `${trim(n / 1e3)}k`;
  return String(n);
}

function trim(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** Any value as text: strings as they are, none as "—", objects and arrays as JSON. */
export function formatValue(x: unknown): string {
  if (x === null || x === undefined) return "—";
  if (typeof x === "string") return x;
  if (typeof x === "number" || typeof x === "boolean" || typeof x === "bigint") return String(x);
  return JSON.stringify(x) ?? "—";
}

/** A metric value for tables: a fixed number of decimals. */
export function formatFloat(x: unknown, digits = 3): string {
  if (typeof x !== "number" || !Number.isFinite(x)) return formatValue(x);
  if (Math.abs(x) >= 1e4) return intFmt.format(Math.round(x));
  return x.toFixed(digits);
}

/** A number with `digits` decimals; "–" for none. */
export function formatFixed(x: number | null | undefined, digits = 3): string {
  return x === null || x === undefined ? "–" : x.toFixed(digits);
}

/** A progress count: whole numbers with separators, small fractions kept short. */
export function formatCount(x: number): string {
  if (!Number.isFinite(x)) return "—";
  if (Number.isInteger(x) || Math.abs(x) >= 100) return intFmt.format(Math.floor(x));
  return String(Number(x.toFixed(2)));
}

export function formatPercent(x: unknown, digits = 1): string {
  if (typeof x !== "number" || !Number.isFinite(x)) return "—";
  return `${(x * 100).toFixed(digits)}%`;
}

/** Parse an API timestamp. Naive ISO strings (no zone) are taken as UTC. */
export function parseTime(s: string | null | undefined): Date | null {
  if (!s) return null;
  const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  const s = ms / 1000;
  if (s < 1) return `${Math.round(ms)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  const rs = Math.floor(s % 60);
  if (m < 60) return `${m}m ${String(rs).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, "0")}m`;
}

export function formatTimestamp(d: Date | null): string {
  if (!d) return "—";
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay
    ? d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function formatAgo(d: Date | null, now = Date.now()): string {
  if (!d) return "";
  const s = Math.max(0, (now - d.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
