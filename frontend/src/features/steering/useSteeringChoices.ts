import { useEffect, useEffectEvent, useState } from "react";
import { errorMessage } from "../../api/client";
import { saesApi, type SAEList } from "../features/api";
import { steeringApi, type Vector } from "./api";

/** What the steering form chooses from: the model's stored vectors and SAEs. Once the vectors arrive,
 * `onDefaultVector` gets the one to start with ("refusal" if it passed the selection's filters). */
export function useSteeringChoices(modelId: string | null, onDefaultVector: (vectorId: string) => void) {
  const [vectors, setVectors] = useState<Vector[]>([]);
  const [saes, setSaes] = useState<SAEList["saes"]>([]);
  const [error, setError] = useState<string | null>(null);
  const chooseDefault = useEffectEvent(onDefaultVector);

  useEffect(() => {
    const c = new AbortController();
    steeringApi
      .vectors(modelId, c.signal)
      .then((v) => {
        setVectors(v.vectors);
        // a direction that passed the filters first: "refusal" if it did, any that did, then "refusal" anyway
        // (flagged in the picker and the candidate panel), then the first
        const passed = v.vectors.filter((x) => x.passed === true);
        const refusal =
          passed.find((x) => x.name === "refusal") ?? passed[0] ?? v.vectors.find((x) => x.name === "refusal") ?? v.vectors[0];
        if (refusal) chooseDefault(refusal.id);
      })
      .catch((e: unknown) => !c.signal.aborted && setError(errorMessage(e)));
    saesApi
      .saes(modelId, c.signal)
      .then((s) => setSaes(s.saes))
      .catch(() => setSaes([]));
    return () => c.abort();
  }, [modelId]);

  return { vectors, saes, error };
}
