// The job runner's rows: every background job, its status and progress.
import { request, type ResponseOf } from "../../api/client";

export type JobsResponse = ResponseOf<"/api/jobs", "get">;
export type Job = JobsResponse["jobs"][number];
export type JobStatus = Job["status"];
export type JobOut = ResponseOf<"/api/jobs/{job_id}", "get">;

export const jobsApi = {
  jobs: (signal?: AbortSignal) => request<JobsResponse>("GET", "/api/jobs", undefined, signal),
  job: (id: number) => request<JobOut>("GET", `/api/jobs/${id}`),
  /** Cancel a queued or running job (a running one stops at its next progress report). */
  cancel: (id: number) => request<JobOut>("DELETE", `/api/jobs/${id}`),
};
