// Datasets: the world's own and the ones people register (upload a .jsonl, .txt or .parquet file).
import { errorOfResponse, request, send, type ResponseOf, type Schemas } from "../../api/client";

export type DatasetList = ResponseOf<"/api/datasets", "get">;
export type Dataset = DatasetList["datasets"][number];
export type DatasetDetail = ResponseOf<"/api/datasets/{dataset_id}", "get">;
export type SampleDocument = NonNullable<DatasetDetail["samples"]>[number];
export type Uploaded = Schemas["DatasetDetail"];

const enc = encodeURIComponent;

export const datasetsApi = {
  datasets: (signal?: AbortSignal) => request<DatasetList>("GET", "/api/datasets", undefined, signal),
  dataset: (id: string, samples = 5, signal?: AbortSignal) =>
    request<DatasetDetail>("GET", `/api/datasets/${enc(id)}?samples=${samples}`, undefined, signal),
  /** Multipart upload (the one non-JSON request): the server checks the size, the format and every line. */
  upload: async (file: File, id: string, name: string): Promise<Uploaded> => {
    const form = new FormData();
    form.append("file", file);
    form.append("id", id);
    if (name) form.append("name", name);
    const res = await send("/api/datasets", { method: "POST", headers: { Accept: "application/json" }, body: form });
    if (!res.ok) throw await errorOfResponse(res);
    return (await res.json()) as Uploaded;
  },
  remove: (id: string) => request<null>("DELETE", `/api/datasets/${enc(id)}`),
};
