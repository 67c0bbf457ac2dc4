// Jacobian API: training-Jacobian runs (list, one run, start) and per-token layer Jacobians.
// Types are generated from openapi.json (src/api/schema.d.ts).
import { request, type RequestOf, type ResponseOf } from "../../api/client";

export type JacobianRunList = ResponseOf<"/api/jacobian/runs", "get">;
export type JacobianRunItem = JacobianRunList["runs"][number];
export type JacobianRun = ResponseOf<"/api/jacobian/runs/{run_id}", "get">;
export type JacobianSettings = RequestOf<"/api/jacobian/runs", "post">;
export type JacobianStarted = ResponseOf<"/api/jacobian/runs", "post">;
export type LayerRequest = RequestOf<"/api/jacobian/layer", "post">;
export type LayerJacobian = ResponseOf<"/api/jacobian/layer", "post">;

export const jacobianApi = {
  runs: (signal?: AbortSignal) => request<JacobianRunList>("GET", "/api/jacobian/runs", undefined, signal),
  run: (id: string, signal?: AbortSignal) => request<JacobianRun>("GET", `/api/jacobian/runs/${encodeURIComponent(id)}`, undefined, signal),
  start: (body: JacobianSettings) => request<JacobianStarted>("POST", "/api/jacobian/runs", body),
  layer: (body: LayerRequest, signal?: AbortSignal) => request<LayerJacobian>("POST", "/api/jacobian/layer", body, signal),
};
