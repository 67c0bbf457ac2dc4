import { useState } from "react";
import { ErrorBox, Panel, Spinner } from "../../ui/components";
import { LayerJacobianResult } from "../jacobian/LayerJacobianResult";
import { useLayerJacobian } from "../jacobian/useLayerJacobian";
import { submitTo } from "../../ui/events";

/** The selected token's layer Jacobian d h_out[p] / d h_in[p] (POST /api/jacobian/layer). */
export function TokenJacobian({ text, position, modelId }: { text: string; position: number; modelId: string | null }) {
  const [hookIn, setHookIn] = useState("blocks.0.hook_resid_pre");
  const [hookOut, setHookOut] = useState("blocks.1.hook_resid_post");
  const { res, error, busy, compute } = useLayerJacobian();
  const submit = submitTo(() => void compute(text, position, hookIn, hookOut, modelId));
  return (
    <Panel title={<>Layer Jacobian at position {position}</>} testId="inspect-jacobian">
      <form onSubmit={submit} style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }} data-testid="inspect-jacobian-form">
        <label className="field">
          <span className="field-label">from hook</span>
          <input value={hookIn} onChange={(e) => setHookIn(e.target.value)} className="mono" data-testid="inspect-jacobian-hook-in" />
        </label>
        <label className="field">
          <span className="field-label">to hook</span>
          <input value={hookOut} onChange={(e) => setHookOut(e.target.value)} className="mono" data-testid="inspect-jacobian-hook-out" />
        </label>
        <button type="submit" className="btn" disabled={busy} data-testid="inspect-jacobian-run">
          Spectrum and top directions
        </button>
        {busy && <Spinner />}
      </form>
      {error && <ErrorBox message={error} testId="inspect-jacobian-error" />}
      {res && <LayerJacobianResult res={res} />}
    </Panel>
  );
}
