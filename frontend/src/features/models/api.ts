// The server's health and the model registry.
import { request, type ResponseOf } from "../../api/client";

export type HealthResponse = ResponseOf<"/api/health", "get">;
export type ModelsResponse = ResponseOf<"/api/models", "get">;
export type ModelInfo = ModelsResponse["models"][number];

export const modelsApi = {
  health: (signal?: AbortSignal) => request<HealthResponse>("GET", "/api/health", undefined, signal),
  models: (signal?: AbortSignal) => request<ModelsResponse>("GET", "/api/models", undefined, signal),
};
