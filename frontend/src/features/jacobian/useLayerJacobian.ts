import { useState } from "react";
import { errorMessage } from "../../api/client";
import { jacobianApi, type LayerJacobian } from "./api";

/** POST /api/jacobian/layer with its result, error and busy state (the Jacobian page and the inspector). */
export function useLayerJacobian() {
  const [res, setRes] = useState<LayerJacobian | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const compute = async (prompt: string, position: number, hookIn: string, hookOut: string, modelId: string | null) => {
    setBusy(true);
    setError(null);
    try {
      setRes(await jacobianApi.layer({ prompt, position, hook_in: hookIn, hook_out: hookOut, model_id: modelId, top_k: 8, n_directions: 5 }));
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };
  return { res, error, busy, compute };
}
