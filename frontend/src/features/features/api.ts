// SAEs (issue 3): registry, feature lists, dashboards, labels, neurons, activations on text.
import { queryString, request, type RequestOf, type ResponseOf, type Schemas } from "../../api/client";

export type SAEList = ResponseOf<"/api/saes", "get">;
export type SAE = ResponseOf<"/api/saes/{sae_id}", "get">;
export type FeaturePage = ResponseOf<"/api/saes/{sae_id}/features", "get">;
export type FeatureRow = FeaturePage["features"][number];
export type Dashboard = ResponseOf<"/api/saes/{sae_id}/features/{index}", "get">;
export type Example = Dashboard["top_examples"][number];
export type ExampleToken = Example["tokens"][number];
export type Interval = Dashboard["intervals"][number];
export type LabelResponse = ResponseOf<"/api/saes/{sae_id}/features/{index}/label", "put">;
export type NeuronsResponse = ResponseOf<"/api/saes/{sae_id}/neurons", "get">;
export type ActivationsRequest = RequestOf<"/api/saes/{sae_id}/activations", "post">;
export type ActivationsResponse = ResponseOf<"/api/saes/{sae_id}/activations", "post">;
export type TokenActivations = ActivationsResponse["tokens"][number];
export type TrainRequest = RequestOf<"/api/saes/train", "post">;
/** The new SAE and its chain of jobs (tokens, cache, train, eval, dashboards), answered with 202. */
export type TrainResponse = Schemas["TrainOut"];

/** Query of GET /api/saes/{sae_id}/features (all optional; the server has the defaults). */
export interface FeatureQuery {
  sort?: "index" | "density" | "max_activation" | "capacity" | "top_domain_share";
  order?: "asc" | "desc";
  offset?: number;
  limit?: number;
  q?: string;
  domain?: string;
  min_density?: number;
  max_density?: number;
}

const enc = encodeURIComponent;

export const saesApi = {
  /** The SAEs of one model (null: of every model). */
  saes: (modelId: string | null, signal?: AbortSignal) => request<SAEList>("GET", `/api/saes${queryString({ model_id: modelId })}`, undefined, signal),
  sae: (saeId: string, signal?: AbortSignal) => request<SAE>("GET", `/api/saes/${enc(saeId)}`, undefined, signal),
  features: (saeId: string, params: FeatureQuery = {}, signal?: AbortSignal) =>
    request<FeaturePage>("GET", `/api/saes/${enc(saeId)}/features${queryString(params)}`, undefined, signal),
  feature: (saeId: string, index: number, signal?: AbortSignal) =>
    request<Dashboard>("GET", `/api/saes/${enc(saeId)}/features/${index}`, undefined, signal),
  setLabel: (saeId: string, index: number, label: string, signal?: AbortSignal) =>
    request<LabelResponse>("PUT", `/api/saes/${enc(saeId)}/features/${index}/label`, { label }, signal),
  neurons: (saeId: string, signal?: AbortSignal) => request<NeuronsResponse>("GET", `/api/saes/${enc(saeId)}/neurons`, undefined, signal),
  activations: (saeId: string, body: ActivationsRequest, signal?: AbortSignal) =>
    request<ActivationsResponse>("POST", `/api/saes/${enc(saeId)}/activations`, body, signal),
  train: (body: TrainRequest) => request<TrainResponse>("POST", "/api/saes/train", body),
  retryDashboards: (saeId: string) => request<TrainResponse>("POST", `/api/saes/${enc(saeId)}/dashboards`, {}),
  remove: (saeId: string) => request<null>("DELETE", `/api/saes/${enc(saeId)}`),
};
