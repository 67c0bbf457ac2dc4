// Jacobian API: training-Jacobian runs (list, one run, start) and per-token layer Jacobians.
// Types are generated from openapi.json (src/api/schema.d.ts).
import { ApiError, errorFromBody, type RequestOf, type ResponseOf } from "./client";

export type JacobianRunList = ResponseOf<"/api/jacobian/runs", "get">;
export type JacobianRunItem = JacobianRunList["runs"][number];
export type JacobianRun = ResponseOf<"/api/jacobian/runs/{run_id}", "get">;
export type JacobianSettings = RequestOf<"/api/jacobian/runs", "post">;
export type JacobianStarted = ResponseOf<"/api/jacobian/runs", "post">;
export type LayerRequest = RequestOf<"/api/jacobian/layer", "post">;
export type LayerJacobian = ResponseOf<"/api/jacobian/layer", "post">;

async function call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
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
    throw new ApiError(0, `Cannot reach the Loupe server (${err instanceof Error ? err.message : String(err)}).`);
  }
  const raw = await res.text();
  let parsed: unknown = null;
  try {
    parsed = raw ? JSON.parse(raw) : null;
  } catch {
    parsed = null;
  }
  if (!res.ok) throw errorFromBody(res.status, res.statusText, parsed, raw);
  return parsed as T;
}

export const jacobianApi = {
  runs: (signal?: AbortSignal) => call<JacobianRunList>("GET", "/api/jacobian/runs", undefined, signal),
  run: (id: string, signal?: AbortSignal) => call<JacobianRun>("GET", `/api/jacobian/runs/${encodeURIComponent(id)}`, undefined, signal),
  start: (body: JacobianSettings) => call<JacobianStarted>("POST", "/api/jacobian/runs", body),
  layer: (body: LayerRequest, signal?: AbortSignal) => call<LayerJacobian>("POST", "/api/jacobian/layer", body, signal),
};
