import { useEffect, useState } from "react";
import { errorMessage } from "../../api/client";
import { jobsApi } from "../jobs/api";
import { steeringApi, type Evaluation } from "./api";

const POLL_MS = 500;

/** The evaluation sweep of one direction (refusal rate vs alpha per method): the latest stored one,
 * and `evaluate()` to run a new one as a job, polled until it is done. */
export function useEvalSweep(vectorId: string) {
  const [evaluation, setEvaluation] = useState<Evaluation | null>(null);
  const [job, setJob] = useState<{ id: number; message: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [limit, setLimit] = useState(16);
  const [datasetId, setDatasetId] = useState(""); // "": the world's dataset
  const [baseline, setBaseline] = useState(true); // the prompting baseline beside steering

  useEffect(() => {
    const c = new AbortController();
    steeringApi
      .evaluations(vectorId, c.signal)
      .then((l) => setEvaluation(l.evaluations[0] ?? null))
      .catch(() => undefined);
    return () => c.abort();
  }, [vectorId]);

  const evaluate = async () => {
    setError(null);
    try {
      const started = await steeringApi.evaluate({
        vector_id: vectorId,
        methods: ["none", "ablation", "addition", "ace", ...(baseline ? (["prompt_refuse", "prompt_comply"] as const) : [])],
        alphas: [0, 0.5, 1],
        limit,
        max_new_tokens: 12,
        dataset_id: datasetId || null,
      });
      setJob({ id: started.job_id, message: "queued" });
      for (;;) {
        await new Promise((r) => setTimeout(r, POLL_MS));
        const j = await jobsApi.job(started.job_id);
        setJob({ id: started.job_id, message: j.progress.message });
        if (j.status === "failed") throw new Error(j.error ?? "the evaluation failed");
        if (j.status === "done") {
          setEvaluation(await steeringApi.evaluation(Number(j.artifacts.eval_id)));
          break;
        }
      }
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setJob(null);
    }
  };

  return { evaluation, job, error, limit, setLimit, datasetId, setDatasetId, baseline, setBaseline, evaluate };
}
