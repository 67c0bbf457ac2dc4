// Live editing at the selected token: the edit's inputs (as typed) and the intervention they make.
import type { Intervention } from "../steering/api";
import type { EditOp } from "../steering/form";

export type EditTarget = "feature" | "neuron";

export interface TokenEditInputs {
  target: EditTarget;
  feature: string;
  hook: string;
  neuron: string;
  op: EditOp;
  value: string;
}

export const EDIT_RANGE: Record<EditOp, { min: number; max: number; step: number }> = {
  set: { min: -100, max: 100, step: 0.5 },
  scale: { min: -5, max: 5, step: 0.1 },
  zero: { min: 0, max: 0, step: 1 },
};

/** The starting inputs: the token's top feature (or feature 0), set to 10. */
export function initialEditInputs(features: { index: number }[], hook: string): TokenEditInputs {
  return { target: "feature", feature: features.length ? String(features[0].index) : "0", hook, neuron: "0", op: "set", value: "10" };
}

/** The edit as the API takes it, or why the inputs do not make one yet. */
export function editOf(inputs: TokenEditInputs, saeId: string, position: number): Intervention | string {
  const { op } = inputs;
  const value = op === "zero" ? 0 : Number(inputs.value);
  if (op !== "zero" && (inputs.value.trim() === "" || !Number.isFinite(value))) return "Give a finite value.";
  if (inputs.target === "feature") {
    const f = Number(inputs.feature);
    if (inputs.feature.trim() === "" || !Number.isInteger(f)) return "Give a feature index (an integer).";
    return { kind: "edit", sae_id: saeId, feature: f, position, op, value };
  }
  const n = Number(inputs.neuron);
  if (!inputs.hook.trim()) return "Give a hook name, e.g. blocks.0.mlp.hook_post.";
  if (inputs.neuron.trim() === "" || !Number.isInteger(n)) return "Give a neuron index (an integer).";
  return { kind: "edit", hook: inputs.hook.trim(), index: n, position, op, value };
}

/** The slider's position for the typed value, clamped to the op's range. */
export function sliderValue(inputs: TokenEditInputs): number {
  if (inputs.op === "zero") return 0;
  const range = EDIT_RANGE[inputs.op];
  const num = Number(inputs.value);
  return Math.min(range.max, Math.max(range.min, Number.isFinite(num) ? num : 0));
}
