// Influence (issue 5): top influential training sequences for a completion or an SAE feature.
import { queryString, request, type RequestOf, type ResponseOf } from "../../api/client";

export type InfluenceRequest = RequestOf<"/api/influence", "post">;
export type InfluenceResponse = ResponseOf<"/api/influence", "post">;
export type InfluenceStatus = ResponseOf<"/api/influence/status", "get">;
export type InfluenceResult = InfluenceResponse["results"][number];
export type IndexList = ResponseOf<"/api/influence/indexes", "get">;
export type IndexInfo = IndexList["indexes"][number];
export type IndexRequest = RequestOf<"/api/influence/indexes", "post">;
export type IndexStarted = ResponseOf<"/api/influence/indexes", "post">;

export const influenceApi = {
  influence: (body: InfluenceRequest, signal?: AbortSignal) => request<InfluenceResponse>("POST", "/api/influence", body, signal),
  /** Whether queries about a model (null: the index's) can be answered, and why not. */
  status: (modelId: string | null, signal?: AbortSignal) =>
    request<InfluenceStatus>("GET", `/api/influence/status${queryString({ model_id: modelId })}`, undefined, signal),
  /** Every influence index (model, dataset, target) with its status and its build's job. */
  indexes: (signal?: AbortSignal) => request<IndexList>("GET", "/api/influence/indexes", undefined, signal),
  /** Build (or join the build of) the index of a model on the data it was trained on. */
  build: (body: IndexRequest) => request<IndexStarted>("POST", "/api/influence/indexes", body),
};
