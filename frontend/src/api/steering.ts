// Steering API: vectors, streamed generation with interventions, the evaluation sweep.
// Types are generated from openapi.json (src/api/schema.d.ts).
import { ApiError, errorFromBody, type RequestOf, type ResponseOf, type Schemas, request } from "./client";

export type VectorList = ResponseOf<"/api/vectors", "get">;
export type Vector = VectorList["vectors"][number];
export type VectorDetail = ResponseOf<"/api/vectors/{vector_id}", "get">;
export type CandidateRow = VectorDetail["candidates"]["rows"][number];
export type EvaluateRequest = RequestOf<"/api/steering/evaluate", "post">;
export type JobStarted = Schemas["JobStarted"];
export type Evaluation = ResponseOf<"/api/steering/evaluations/{eval_id}", "get">;
export type EvaluationList = ResponseOf<"/api/steering/evaluations", "get">;
export type GenerateBody = RequestOf<"/api/generate", "post">;
export type Intervention = NonNullable<GenerateBody["interventions"]>[number];
export type JobOut = ResponseOf<"/api/jobs/{job_id}", "get">;
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
    };

const call = request;

const enc = encodeURIComponent;

export const steeringApi = {
  vectors: (signal?: AbortSignal) => call<VectorList>("GET", "/api/vectors", undefined, signal),
  vector: (id: string, signal?: AbortSignal) => call<VectorDetail>("GET", `/api/vectors/${enc(id)}`, undefined, signal),
  evaluate: (body: EvaluateRequest) => call<JobStarted>("POST", "/api/steering/evaluate", body),
  evaluations: (vectorId: string, signal?: AbortSignal) =>
    call<EvaluationList>("GET", `/api/steering/evaluations?vector_id=${enc(vectorId)}&limit=1`, undefined, signal),
  evaluation: (id: number) => call<Evaluation>("GET", `/api/steering/evaluations/${id}`),
  job: (id: number) => call<JobOut>("GET", `/api/jobs/${id}`),
  nextToken: (body: NextTokenRequest, signal?: AbortSignal) => call<NextToken>("POST", "/api/steering/next-token", body, signal),
  exportUrl: (id: string) => `/api/vectors/${enc(id)}/export`,

  /** POST /api/generate/stream: calls `onEvent` for each NDJSON event as it arrives. */
  async stream(body: GenerateBody, onEvent: (e: StreamEvent) => void, signal?: AbortSignal): Promise<void> {
    let res: Response;
    try {
      res = await fetch("/api/generate/stream", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/x-ndjson" },
        body: JSON.stringify(body),
        signal,
      });
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") throw err;
      throw new ApiError(0, `Cannot reach the Loupe server (${err instanceof Error ? err.message : String(err)}).`);
    }
    if (!res.ok || !res.body) {
      const raw = await res.text();
      let parsed: unknown;
      try {
        parsed = raw ? JSON.parse(raw) : null;
      } catch {
        parsed = null;
      }
      throw errorFromBody(res.status, res.statusText, parsed, raw);
    }
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
        if (line) onEvent(JSON.parse(line) as StreamEvent);
      }
    }
    if (buf.trim()) onEvent(JSON.parse(buf) as StreamEvent);
  },
};
