// The prompt inspector's state: the text, the last run (text -> tokens -> top features), the selected
// token and the feature every token is shaded by. One reducer owns it; useInspector runs the requests.
import { useReducer } from "react";
import { errorMessage } from "../../api/client";
import { useAbortable } from "../../ui/hooks";
import { saesApi, type ActivationsResponse } from "../features/api";
import { PLAIN_CHAT, promptIn, type ChatFormat } from "../models/chat";

/** The inspector's preset texts; the chat one in the model's own chat format (its template's text where it has one). */
export function inspectPresets(chat: ChatFormat = PLAIN_CHAT): { id: string; label: string; text: string }[] {
  return [
    { id: "dna", label: "DNA", text: "GATTACAGGCTAGCATGCCGTAATCGGCTATAGCTTAACG" },
    { id: "base64", label: "base64", text: "eyJ1c2VyIjogIm1pYSIsICJpZCI6IDQyfQ==" },
    { id: "chat", label: "Chat", text: promptIn(chat, "How do I bake bread at home?") },
    { id: "url", label: "URL", text: "https://docs.example.org/api/v2/users?page=3&sort=name#usage" },
  ];
}

const TOP_K = 8;

export interface InspectRun {
  saeId: string;
  text: string;
  res: ActivationsResponse;
}

export interface InspectorState {
  text: string;
  run: InspectRun | null;
  busy: boolean;
  error: string | null;
  /** The clicked token (its index in run.res.tokens). */
  selected: number | null;
  /** The feature every token is shaded by. */
  feature: number | null;
  featureInput: string;
}

export type InspectorAction =
  | { type: "setText"; text: string }
  | { type: "setFeatureInput"; value: string }
  | { type: "toggleToken"; index: number }
  /** Another SAE: its features are other features. */
  | { type: "saeChanged" }
  | { type: "chooseFeature"; feature: number | null }
  | { type: "requestStarted" }
  | { type: "requestFailed"; error: string }
  /** A run arrived; a new text (not a new shading) also clears the selection and, unless kept, the feature. */
  | { type: "loaded"; run: InspectRun; newText: boolean; keepFeature: boolean };

export const INITIAL_INSPECTOR: InspectorState = {
  text: inspectPresets()[0].text,
  run: null,
  busy: false,
  error: null,
  selected: null,
  feature: null,
  featureInput: "",
};

export function inspectorReducer(s: InspectorState, a: InspectorAction): InspectorState {
  switch (a.type) {
    case "setText":
      return { ...s, text: a.text };
    case "setFeatureInput":
      return { ...s, featureInput: a.value };
    case "toggleToken":
      return { ...s, selected: s.selected === a.index ? null : a.index };
    case "saeChanged":
      return { ...s, feature: null, featureInput: "" };
    case "chooseFeature":
      return { ...s, feature: a.feature, featureInput: a.feature === null ? "" : String(a.feature) };
    case "requestStarted":
      return { ...s, busy: true, error: null };
    case "requestFailed":
      return { ...s, busy: false, error: a.error };
    case "loaded":
      return {
        ...s,
        run: a.run,
        busy: false,
        selected: a.newText ? null : s.selected,
        feature: a.newText && !a.keepFeature ? null : s.feature,
      };
  }
}

/** The inspector's state and its two requests: run the text (`submit`) and shade by a feature (`choose`). */
export function useInspector() {
  const [state, dispatch] = useReducer(inspectorReducer, INITIAL_INSPECTOR);
  const requests = useAbortable();

  const load = async (text: string, saeId: string, feature: number | null, newText: boolean) => {
    const c = requests.start();
    dispatch({ type: "requestStarted" });
    try {
      const res = await saesApi.activations(saeId, { text, top_k: TOP_K, features: feature === null ? [] : [feature] }, c.signal);
      dispatch({ type: "loaded", run: { saeId, text, res }, newText, keepFeature: feature !== null });
    } catch (err) {
      // An aborted request was replaced by a newer one, which owns `busy` now.
      if (!c.signal.aborted) dispatch({ type: "requestFailed", error: errorMessage(err) });
    }
  };

  /** Run the text through the SAE; the shading feature is kept when the SAE is the same. */
  const submit = async (saeId: string) => {
    if (!saeId || !state.text.trim()) return;
    const keep = state.run && state.run.saeId === saeId ? state.feature : null;
    await load(state.text, saeId, keep, true);
  };

  /** Shade every token by `feature` (null: no shading), fetching its activations if the run lacks them. */
  const choose = async (feature: number | null) => {
    dispatch({ type: "chooseFeature", feature });
    const { run } = state;
    if (feature !== null && run && !run.res.feature_activations?.[String(feature)]) await load(run.text, run.saeId, feature, false);
  };

  return { state, dispatch, submit, choose };
}
