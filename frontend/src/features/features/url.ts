// The /features page keeps its state in the URL (shareable, back button); these build and read it.
import type { FeatureQuery } from "./api";

export type SortKey = NonNullable<FeatureQuery["sort"]>;

export interface FeaturesUrl {
  sae: string;
  view: "features" | "neurons";
  sort: SortKey;
  order: "asc" | "desc";
  q: string;
  domain: string;
  min: string; // density bounds as fractions, "" for none
  max: string;
  offset: number;
  limit: number;
}

/** Change the URL's state: a new history entry, or (`replace`, for typing) the same one. */
export type SetFeaturesUrl = (patch: Partial<FeaturesUrl>, replace?: boolean) => void;

const DEFAULTS: FeaturesUrl = {
  sae: "",
  view: "features",
  sort: "index",
  order: "asc",
  q: "",
  domain: "",
  min: "",
  max: "",
  offset: 0,
  limit: 50,
};

const SORTS: SortKey[] = ["index", "density", "max_activation", "capacity", "top_domain_share"];

/** The /features state from a query string; bad or missing values fall back to the defaults. */
export function parseFeaturesUrl(search: string): FeaturesUrl {
  const p = new URLSearchParams(search);
  const int = (k: string, d: number) => {
    const v = Number(p.get(k));
    return p.has(k) && Number.isInteger(v) && v >= 0 ? v : d;
  };
  const sort = p.get("sort") as SortKey | null;
  const num = (k: string) => {
    const v = p.get(k);
    return v !== null && v !== "" && Number.isFinite(Number(v)) ? v : "";
  };
  return {
    sae: p.get("sae") ?? "",
    view: p.get("view") === "neurons" ? "neurons" : "features",
    sort: sort && SORTS.includes(sort) ? sort : DEFAULTS.sort,
    order: p.get("order") === "desc" ? "desc" : "asc",
    q: p.get("q") ?? "",
    domain: p.get("domain") ?? "",
    min: num("min"),
    max: num("max"),
    offset: int("offset", 0),
    limit: Math.min(500, Math.max(1, int("limit", DEFAULTS.limit))),
  };
}

/** A /features URL for this state; defaults are left out so links stay short. */
export function featuresUrl(s: Partial<FeaturesUrl>): string {
  const full = { ...DEFAULTS, ...s };
  const p = new URLSearchParams();
  for (const k of Object.keys(DEFAULTS) as (keyof FeaturesUrl)[]) {
    const v = full[k];
    if (v !== DEFAULTS[k] && v !== "") p.set(k, String(v));
  }
  const q = p.toString();
  return q ? `/features?${q}` : "/features";
}

/** The dashboard page of one feature. */
export const featureUrl = (saeId: string, index: number) => `/features/${encodeURIComponent(saeId)}/${index}`;
