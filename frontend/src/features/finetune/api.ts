// Fine-tunes: a registered model tuned on a dataset (LoRA or full) into a new model.
import { request, type RequestOf, type ResponseOf } from "../../api/client";

export type FineTuneRequest = RequestOf<"/api/finetunes", "post">;
export type FineTuneList = ResponseOf<"/api/finetunes", "get">;
export type FineTuneRun = FineTuneList["runs"][number];
export type FineTuneDetail = ResponseOf<"/api/finetunes/{model_id}", "get">;

const enc = encodeURIComponent;

export const finetuneApi = {
  start: (body: FineTuneRequest) => request<ResponseOf<"/api/finetunes", "post">>("POST", "/api/finetunes", body),
  runs: (signal?: AbortSignal) => request<FineTuneList>("GET", "/api/finetunes", undefined, signal),
  run: (modelId: string, signal?: AbortSignal) => request<FineTuneDetail>("GET", `/api/finetunes/${enc(modelId)}`, undefined, signal),
  cancel: (jobId: number) => request<unknown>("DELETE", `/api/jobs/${jobId}`),
};
