// A small typed fetch client for the Loupe API.
//
// Types come from src/api/schema.d.ts, generated from openapi.json
// (`npm run gen:api`). Request/response types are looked up by path and
// method, so they follow the contract even if schema component names change.
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];

type JsonContent<T> = T extends { content: { "application/json": infer B } } ? B : never;
type Method = "get" | "post" | "put" | "patch" | "delete";

/** The JSON body of the 200 response of `method path`. */
export type ResponseOf<P extends keyof paths, M extends Method> = paths[P][M] extends {
  responses: { 200: infer R };
}
  ? JsonContent<R>
  : never;

/** The JSON request body of `method path`. */
export type RequestOf<P extends keyof paths, M extends Method> = paths[P][M] extends {
  requestBody?: infer RB;
}
  ? JsonContent<NonNullable<RB>>
  : never;

export type HealthResponse = ResponseOf<"/api/health", "get">;
export type ModelsResponse = ResponseOf<"/api/models", "get">;
export type ModelInfo = ModelsResponse["models"][number];
export type JobsResponse = ResponseOf<"/api/jobs", "get">;
export type Job = JobsResponse["jobs"][number];
export type JobStatus = Job["status"];
export type EvalsResponse = ResponseOf<"/api/evals", "get">;
export type EvalRecord = EvalsResponse["evals"][number];
export type GenerateRequest = RequestOf<"/api/generate", "post">;
export type GenerateResponse = ResponseOf<"/api/generate", "post">;
export type Generation = GenerateResponse["default"];

// SAEs (issue 3): registry, feature lists, dashboards, labels, activations on text.
export type SAEList = ResponseOf<"/api/saes", "get">;
export type SAE = ResponseOf<"/api/saes/{sae_id}", "get">;
export type FeaturePage = ResponseOf<"/api/saes/{sae_id}/features", "get">;
export type FeatureRow = FeaturePage["features"][number];
export type Dashboard = ResponseOf<"/api/saes/{sae_id}/features/{index}", "get">;
export type Example = Dashboard["top_examples"][number];
export type ExampleToken = Example["tokens"][number];
export type Interval = Dashboard["intervals"][number];
export type LabelResponse = ResponseOf<"/api/saes/{sae_id}/features/{index}/label", "put">;
export type NeuronsResponse = ResponseOf<"/api/saes/{sae_id}/neurons", "get">;
export type ActivationsRequest = RequestOf<"/api/saes/{sae_id}/activations", "post">;
export type ActivationsResponse = ResponseOf<"/api/saes/{sae_id}/activations", "post">;
export type TokenActivations = ActivationsResponse["tokens"][number];

// Influence (issue 5): top influential training sequences for a completion or an SAE feature.
export type InfluenceRequest = RequestOf<"/api/influence", "post">;
export type InfluenceResponse = ResponseOf<"/api/influence", "post">;
export type InfluenceStatus = ResponseOf<"/api/influence/status", "get">;
export type InfluenceResult = InfluenceResponse["results"][number];

/** Query of GET /api/saes/{sae_id}/features (all optional; the server has the defaults). */
export interface FeatureQuery {
  sort?: "index" | "density" | "max_activation" | "capacity" | "top_domain_share";
  order?: "asc" | "desc";
  offset?: number;
  limit?: number;
  q?: string;
  domain?: string;
  min_density?: number;
  max_density?: number;
}

function queryString(params: object): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

const enc = encodeURIComponent;

/** An HTTP or network failure, with a message a person can act on. */
export class ApiError extends Error {
  readonly status: number; // 0 for network failures
  readonly detail: string;
  readonly errors: unknown[];
  readonly body: unknown;

  constructor(status: number, detail: string, errors: unknown[] = [], body: unknown = null) {
    super(ApiError.compose(detail, errors));
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.errors = errors;
    this.body = body;
  }

  private static compose(detail: string, errors: unknown[]): string {
    const lines = errors.map(formatValidationError).filter((l) => l && !detail.includes(l));
    return lines.length ? `${detail}\n${lines.map((l) => `• ${l}`).join("\n")}` : detail;
  }
}

function formatLoc(loc: unknown): string {
  if (!Array.isArray(loc)) return "";
  const parts = loc.filter((p) => p !== "body");
  return parts.map(String).join(".");
}

/** One pydantic/FastAPI validation error -> "field: message". */
export function formatValidationError(e: unknown): string {
  if (typeof e === "string") return e;
  if (e && typeof e === "object") {
    const o = e as Record<string, unknown>;
    const msg = typeof o.msg === "string" ? o.msg : typeof o.message === "string" ? o.message : "";
    const loc = formatLoc(o.loc) || (typeof o.field === "string" ? o.field : "");
    if (msg) return loc ? `${loc}: ${msg}` : msg;
    return JSON.stringify(e);
  }
  return String(e);
}

/** Turn an error response body into an ApiError. Handles the backend's
 * `{"detail": str, "errors"?: [...]}` and FastAPI's default `{"detail": [...]}`. */
export function errorFromBody(status: number, statusText: string, body: unknown, raw: string): ApiError {
  const fallback = `HTTP ${status}${statusText ? ` ${statusText}` : ""}`;
  if (body && typeof body === "object") {
    const o = body as Record<string, unknown>;
    const errors = Array.isArray(o.errors) ? o.errors : [];
    if (typeof o.detail === "string" && o.detail.trim()) {
      return new ApiError(status, o.detail, errors, body);
    }
    if (Array.isArray(o.detail)) {
      const lines = o.detail.map(formatValidationError);
      const detail = lines.length === 1 ? `Invalid request: ${lines[0]}` : "Invalid request";
      return new ApiError(status, detail, lines.length === 1 ? [] : o.detail, body);
    }
    if (typeof o.message === "string") return new ApiError(status, o.message, errors, body);
  }
  const text = raw.trim().replace(/\s+/g, " ").slice(0, 300);
  return new ApiError(status, text && !text.startsWith("<") ? `${fallback}: ${text}` : fallback, [], body);
}

/** One JSON request; non-2xx answers and network failures become `ApiError`s. */
export async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: body === undefined ? { Accept: "application/json" } : { Accept: "application/json", "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError(0, `Cannot reach the Loupe server (${err instanceof Error ? err.message : String(err)}). Is \`loupe serve\` running?`);
  }
  const raw = await res.text();
  let parsed: unknown = null;
  if (raw) {
    try {
      parsed = JSON.parse(raw);
    } catch {
      parsed = null;
    }
  }
  if (!res.ok) throw errorFromBody(res.status, res.statusText, parsed, raw);
  if (parsed === null && raw) {
    throw new ApiError(res.status, `Expected JSON from ${path} but got something else (is the API mounted under /api?)`);
  }
  return parsed as T;
}

export const api = {
  health: (signal?: AbortSignal) => request<HealthResponse>("GET", "/api/health", undefined, signal),
  models: (signal?: AbortSignal) => request<ModelsResponse>("GET", "/api/models", undefined, signal),
  jobs: (signal?: AbortSignal) => request<JobsResponse>("GET", "/api/jobs", undefined, signal),
  evals: (signal?: AbortSignal) => request<EvalsResponse>("GET", "/api/evals", undefined, signal),
  generate: (body: GenerateRequest, signal?: AbortSignal) =>
    request<GenerateResponse>("POST", "/api/generate", body, signal),
  saes: (signal?: AbortSignal) => request<SAEList>("GET", "/api/saes", undefined, signal),
  sae: (saeId: string, signal?: AbortSignal) => request<SAE>("GET", `/api/saes/${enc(saeId)}`, undefined, signal),
  features: (saeId: string, params: FeatureQuery = {}, signal?: AbortSignal) =>
    request<FeaturePage>("GET", `/api/saes/${enc(saeId)}/features${queryString(params)}`, undefined, signal),
  feature: (saeId: string, index: number, signal?: AbortSignal) =>
    request<Dashboard>("GET", `/api/saes/${enc(saeId)}/features/${index}`, undefined, signal),
  setLabel: (saeId: string, index: number, label: string, signal?: AbortSignal) =>
    request<LabelResponse>("PUT", `/api/saes/${enc(saeId)}/features/${index}/label`, { label }, signal),
  neurons: (saeId: string, signal?: AbortSignal) =>
    request<NeuronsResponse>("GET", `/api/saes/${enc(saeId)}/neurons`, undefined, signal),
  activations: (saeId: string, body: ActivationsRequest, signal?: AbortSignal) =>
    request<ActivationsResponse>("POST", `/api/saes/${enc(saeId)}/activations`, body, signal),
  influence: (body: InfluenceRequest, signal?: AbortSignal) =>
    request<InfluenceResponse>("POST", "/api/influence", body, signal),
  influenceStatus: (signal?: AbortSignal) => request<InfluenceStatus>("GET", "/api/influence/status", undefined, signal),
};

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
