import { useState } from "react";
import { errorMessage } from "../../api/client";
import { useAbortable } from "../../ui/hooks";
import { steeringApi, type StreamEvent } from "./api";
import { interventionOf, type SteerForm } from "./form";

export interface Completions {
  default: string;
  steered: string | null;
}

/** Greedy default and steered completions of the form's prompt, streamed token by token
 * (POST /api/generate/stream); a new run aborts the one before. */
export function useSteerStream() {
  const [out, setOut] = useState<Completions | null>(null);
  const [streaming, setStreaming] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const requests = useAbortable();

  const run = async (form: SteerForm, modelId: string | null) => {
    const c = requests.start();
    setError(null);
    setStreaming(true);
    const acc: Completions = { default: "", steered: "" };
    setOut({ default: "", steered: "" });
    try {
      await steeringApi.stream(
        { prompt: form.prompt, max_new_tokens: form.maxNewTokens, temperature: 0, model_id: modelId, interventions: [interventionOf(form)] },
        (ev: StreamEvent) => {
          if (ev.event === "token") {
            if (ev.stream === "default") acc.default += ev.token;
            else acc.steered = (acc.steered ?? "") + ev.token;
            setOut({ ...acc });
          } else if (ev.event === "done") {
            setOut({ default: ev.default.completion, steered: ev.steered?.completion ?? null });
          }
        },
        c.signal,
      );
    } catch (err) {
      if (!c.signal.aborted) {
        setError(errorMessage(err));
        setOut(null);
      }
    } finally {
      if (requests.isLatest(c)) setStreaming(false);
    }
  };

  return { out, streaming, error, run };
}
