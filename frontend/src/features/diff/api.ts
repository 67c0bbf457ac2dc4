// Model diffs: what changed between a tuned model and its parent (weights, activations, SAE features, refusal).
import { request, type RequestOf, type ResponseOf, type Schemas } from "../../api/client";

export type DiffRequest = RequestOf<"/api/diffs", "post">;
/** Answered with 202: the diff's id, and its job (null when it was computed before). */
export type DiffStarted = Schemas["DiffStarted"];
export type DiffList = ResponseOf<"/api/diffs", "get">;
export type DiffSummary = DiffList["diffs"][number];
export type DiffDetail = ResponseOf<"/api/diffs/{diff_id}", "get">;
export type DiffResult = NonNullable<DiffDetail["result"]>;
export type FeatureChange = NonNullable<DiffResult["features"]["top"]>[string][number];

const enc = encodeURIComponent;

export const diffApi = {
  start: (body: DiffRequest) => request<DiffStarted>("POST", "/api/diffs", body),
  diffs: (signal?: AbortSignal) => request<DiffList>("GET", "/api/diffs", undefined, signal),
  diff: (diffId: string, signal?: AbortSignal) => request<DiffDetail>("GET", `/api/diffs/${enc(diffId)}`, undefined, signal),
  cancel: (jobId: number) => request<unknown>("DELETE", `/api/jobs/${jobId}`),
};
