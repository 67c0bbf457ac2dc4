// Stored evaluations (the demo world's behaviour targets among them).
import { request, type ResponseOf } from "../../api/client";

export type EvalsResponse = ResponseOf<"/api/evals", "get">;
export type EvalRecord = EvalsResponse["evals"][number];

export const evalsApi = {
  evals: (signal?: AbortSignal) => request<EvalsResponse>("GET", "/api/evals", undefined, signal),
};
