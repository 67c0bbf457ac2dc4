// Steering API: vectors, streamed generation with interventions, the evaluation sweep.
// Types are generated from openapi.json (src/api/schema.d.ts).
import { ApiError, errorOfResponse, queryString, request, send, type RequestOf, type ResponseOf, type Schemas } from "../../api/client";
import type { GenerateRequest } from "../generate/api";

export type VectorList = ResponseOf<"/api/vectors", "get">;
export type Vector = VectorList["vectors"][number];
export type VectorDetail = ResponseOf<"/api/vectors/{vector_id}", "get">;
export type CandidateRow = VectorDetail["candidates"]["rows"][number];
export type EvaluateRequest = RequestOf<"/api/steering/evaluate", "post">;
export type JobStarted = Schemas["JobStarted"];
export type Evaluation = ResponseOf<"/api/steering/evaluations/{eval_id}", "get">;
export type EvaluationList = ResponseOf<"/api/steering/evaluations", "get">;
export type Intervention = NonNullable<GenerateRequest["interventions"]>[number];
// continue_tokens has a server default (0); optional here so callers that want no continuations omit it.
export type NextTokenRequest = Omit<RequestOf<"/api/steering/next-token", "post">, "continue_tokens"> & { continue_tokens?: number };
export type NextToken = ResponseOf<"/api/steering/next-token", "post">;

export type StreamEvent =
  | { event: "start"; model_id: string; prompt_tokens: number; streams: string[] }
  | { event: "token"; stream: "default" | "steered"; index: number; token: string }
  | {
      event: "done";
      model_id: string;
      prompt_tokens: number;
      default: { completion: string; tokens: string[] };
      steered: { completion: string; tokens: string[] } | null;
    }
  // a failure after the stream started (the 200 was already sent): the stream ends with it
  | { event: "error"; status: number; detail: string };

const enc = encodeURIComponent;

export const steeringApi = {
  /** The vectors of one model (null: of every model). */
  vectors: (modelId: string | null, signal?: AbortSignal) =>
    request<VectorList>("GET", `/api/vectors${queryString({ model_id: modelId })}`, undefined, signal),
  vector: (id: string, signal?: AbortSignal) => request<VectorDetail>("GET", `/api/vectors/${enc(id)}`, undefined, signal),
  evaluate: (body: EvaluateRequest) => request<JobStarted>("POST", "/api/steering/evaluate", body),
  evaluations: (vectorId: string, signal?: AbortSignal) =>
    request<EvaluationList>("GET", `/api/steering/evaluations?vector_id=${enc(vectorId)}&limit=1`, undefined, signal),
  evaluation: (id: number) => request<Evaluation>("GET", `/api/steering/evaluations/${id}`),
  nextToken: (body: NextTokenRequest, signal?: AbortSignal) => request<NextToken>("POST", "/api/steering/next-token", body, signal),
  /** The direction as a safetensors file (fetched, not linked, so that the API token is sent). */
  async exportFile(id: string): Promise<Blob> {
    const res = await send(`/api/vectors/${enc(id)}/export`, { method: "GET" });
    if (!res.ok) throw await errorOfResponse(res);
    return await res.blob();
  },

  /** POST /api/generate/stream: calls `onEvent` for each NDJSON event as it arrives. */
  async stream(body: GenerateRequest, onEvent: (e: StreamEvent) => void, signal?: AbortSignal): Promise<void> {
    const res = await send("/api/generate/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/x-ndjson" },
      body: JSON.stringify(body),
      signal,
    });
    if (!res.ok || !res.body) throw await errorOfResponse(res);
    const emit = (ev: StreamEvent) => {
      if (ev.event === "error") throw new ApiError(ev.status, ev.detail);
      onEvent(ev);
    };
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) emit(JSON.parse(line) as StreamEvent);
      }
    }
    if (buf.trim()) emit(JSON.parse(buf) as StreamEvent);
  },
};
