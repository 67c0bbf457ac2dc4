// POST /api/generate: the default completion, and the steered one when interventions are given.
import { request, type RequestOf, type ResponseOf } from "../../api/client";

export type GenerateRequest = RequestOf<"/api/generate", "post">;
export type GenerateResponse = ResponseOf<"/api/generate", "post">;
export type Generation = GenerateResponse["default"];

export const generateApi = {
  generate: (body: GenerateRequest, signal?: AbortSignal) => request<GenerateResponse>("POST", "/api/generate", body, signal),
};
