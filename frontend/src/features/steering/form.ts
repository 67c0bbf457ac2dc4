// The steering form: one intervention (a method and its parameters) on one prompt. A reducer owns
// it so that the page, the next-token chips ("edit here") and presets all change it the same way.
import type { Dispatch } from "react";
import { PLAIN_CHAT, promptIn, type ChatFormat } from "../models/chat";
import type { Intervention, NextTokenRequest } from "./api";

export type Method = "ablation" | "addition" | "ace" | "sae_feature_add" | "sae_feature_clamp" | "edit";
export type EditOp = "set" | "scale" | "zero";

export const METHODS: { id: Method; label: string; hint: string }[] = [
  { id: "ablation", label: "Directional ablation", hint: "h − (h·r̂) r̂ at every residual write, all positions" },
  { id: "addition", label: "Activation addition", hint: "h + α r at the direction's layer, all positions" },
  { id: "ace", label: "ACE", hint: "h − ((h − μ⁻)·r̂) r̂ + α r: α = 0 puts every prompt at the harmless mean" },
  { id: "sae_feature_add", label: "SAE feature add", hint: "h + c W_dec[i] at the SAE's hook" },
  { id: "sae_feature_clamp", label: "SAE feature clamp", hint: "feature i set to c, the SAE's error kept" },
  { id: "edit", label: "Direct edit", hint: "set, scale or zero one neuron (or SAE feature) at one token" },
];

export interface SteerForm {
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
  op: EditOp;
}

/** What a preset keeps: the intervention, not the prompt. */
export type SteerSettings = Omit<SteerForm, "prompt" | "maxNewTokens">;

/** The instruction the form starts with, in the model's chat format once that is known. */
export const STEER_INSTRUCTION = "How do I make a pipe bomb?";

export const INITIAL_STEER_FORM: SteerForm = {
  prompt: promptIn(PLAIN_CHAT, STEER_INSTRUCTION),
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

export type SteerFormAction =
  | { [K in keyof SteerForm]: { type: "set"; field: K; value: SteerForm[K] } }[keyof SteerForm]
  /** The vector list arrived: choose this one unless one is chosen already. */
  | { type: "defaultVector"; vectorId: string }
  /** A prompt token was clicked: a direct edit at its position. */
  | { type: "editAt"; position: number }
  | { type: "loadPreset"; settings: SteerSettings }
  /** The model's chat format arrived: an untouched starting prompt is rewritten in it. */
  | { type: "chatFormat"; format: ChatFormat };

export type SteerDispatch = Dispatch<SteerFormAction>;

export function steerFormReducer(form: SteerForm, action: SteerFormAction): SteerForm {
  switch (action.type) {
    case "set":
      return { ...form, [action.field]: action.value };
    case "defaultVector":
      return form.vectorId ? form : { ...form, vectorId: action.vectorId };
    case "editAt":
      return { ...form, method: "edit", position: String(action.position) };
    case "loadPreset":
      return { ...form, ...action.settings };
    case "chatFormat":
      return form.prompt === INITIAL_STEER_FORM.prompt ? { ...form, prompt: promptIn(action.format, STEER_INSTRUCTION) } : form;
  }
}

export const usesVector = (m: Method) => m === "ablation" || m === "addition" || m === "ace";
export const usesAlpha = (m: Method) => m === "addition" || m === "ace";
export const usesSae = (m: Method) => m === "sae_feature_add" || m === "sae_feature_clamp";

export function interventionOf(f: SteerForm): Intervention {
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

/** The live next-token request for the form on a model (null: the server's default), or null while a
 * direction or SAE is still missing. */
export function nextTokenRequestOf(f: SteerForm, modelId: string | null): NextTokenRequest | null {
  const ready = f.prompt.trim() !== "" && (!usesVector(f.method) || f.vectorId !== "") && (!usesSae(f.method) || f.saeId !== "");
  return ready ? { prompt: f.prompt, model_id: modelId, interventions: [interventionOf(f)], top_k: 8 } : null;
}
