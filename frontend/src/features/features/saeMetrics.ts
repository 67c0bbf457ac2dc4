// What an SAE's `metrics` hold beyond the numbers: the targets and the best feature per planted domain.
import type { SAE } from "./api";

export type Target = { value: number; target: string; met: boolean };

/** The SAE's targets by metric name (empty when not evaluated). */
export function targetsOf(sae: SAE): Record<string, Target> {
  const t = (sae.metrics as Record<string, unknown>).targets;
  return t && typeof t === "object" ? (t as Record<string, Target>) : {};
}

/** The best single feature per planted domain, by AUROC, best first. */
export function domainsOf(sae: SAE): { name: string; feature: number; auroc: number }[] {
  const d = (sae.metrics as Record<string, unknown>).domains;
  if (!d || typeof d !== "object") return [];
  return Object.entries(d as Record<string, { feature: number; auroc: number }>)
    .map(([name, v]) => ({ name, feature: v.feature, auroc: v.auroc }))
    .sort((a, b) => b.auroc - a.auroc);
}
