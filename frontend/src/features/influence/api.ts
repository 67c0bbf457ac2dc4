// Influence (issue 5): top influential training sequences for a completion or an SAE feature.
import { queryString, request, type RequestOf, type ResponseOf } from "../../api/client";

export type InfluenceRequest = RequestOf<"/api/influence", "post">;
export type InfluenceResponse = ResponseOf<"/api/influence", "post">;
export type InfluenceStatus = ResponseOf<"/api/influence/status", "get">;
export type InfluenceResult = InfluenceResponse["results"][number];

export const influenceApi = {
  influence: (body: InfluenceRequest, signal?: AbortSignal) => request<InfluenceResponse>("POST", "/api/influence", body, signal),
  /** Whether queries about a model (null: the index's) can be answered, and why not. */
  status: (modelId: string | null, signal?: AbortSignal) =>
    request<InfluenceStatus>("GET", `/api/influence/status${queryString({ model_id: modelId })}`, undefined, signal),
};
