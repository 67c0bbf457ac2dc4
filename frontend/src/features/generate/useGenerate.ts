import { useState } from "react";
import { errorMessage } from "../../api/client";
import { useAbortable } from "../../ui/hooks";
import { generateApi } from "./api";
import { buildRequest, type GenerateForm, type GenerateState } from "./state";

/** The Generate playground's actions on state held above it (App keeps it across navigation):
 * edit a field, submit for the current model (one request at a time; leaving the page aborts it). */
export function useGenerate(
  state: GenerateState,
  setState: (f: (s: GenerateState) => GenerateState) => void,
  modelId: string | null,
) {
  const [busy, setBusy] = useState(false);
  const requests = useAbortable();

  const setField = <K extends keyof GenerateForm>(k: K, v: GenerateForm[K]) => setState((s) => ({ ...s, form: { ...s.form, [k]: v } }));

  const submit = async () => {
    if (busy) return;
    const body = buildRequest(state.form, modelId);
    if (typeof body === "string") {
      setState((s) => ({ ...s, error: body, run: null }));
      return;
    }
    const c = requests.start();
    setBusy(true);
    setState((s) => ({ ...s, error: null }));
    const t0 = performance.now();
    try {
      const response = await generateApi.generate(body, c.signal);
      const elapsedMs = performance.now() - t0;
      setState((s) => ({ ...s, run: { prompt: response.rendered_prompt ?? body.prompt ?? "", request: body, response, elapsedMs }, error: null }));
    } catch (err) {
      if (c.signal.aborted) return;
      setState((s) => ({ ...s, run: null, error: errorMessage(err) }));
    } finally {
      if (requests.isLatest(c)) setBusy(false);
    }
  };

  return { busy, setField, submit };
}
