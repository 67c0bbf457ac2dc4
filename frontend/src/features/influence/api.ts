// Influence (issue 5): top influential training sequences for a completion or an SAE feature.
import { request, type RequestOf, type ResponseOf } from "../../api/client";

export type InfluenceRequest = RequestOf<"/api/influence", "post">;
export type InfluenceResponse = ResponseOf<"/api/influence", "post">;
export type InfluenceStatus = ResponseOf<"/api/influence/status", "get">;
export type InfluenceResult = InfluenceResponse["results"][number];

export const influenceApi = {
  influence: (body: InfluenceRequest, signal?: AbortSignal) => request<InfluenceResponse>("POST", "/api/influence", body, signal),
  status: (signal?: AbortSignal) => request<InfluenceStatus>("GET", "/api/influence/status", undefined, signal),
};
