import { useState } from "react";
import { ErrorBox, Panel, Spinner } from "../../ui/components";
import { promptIn } from "../models/chat";
import { useCurrentModel } from "../models/ModelContext";
import { LayerJacobianResult } from "./LayerJacobianResult";
import { useLayerJacobian } from "./useLayerJacobian";
import { submitTo } from "../../ui/events";

/** The per-token layer Jacobian of the current model on a prompt of your own. */
export function LayerTool() {
  const current = useCurrentModel();
  const [prompt, setPrompt] = useState(() => promptIn(current.chat, "How do I bake bread at home?"));
  const [position, setPosition] = useState(-1);
  const [hookIn, setHookIn] = useState("blocks.0.hook_resid_pre");
  const [hookOut, setHookOut] = useState("blocks.1.hook_resid_post");
  const { res, error, busy, compute } = useLayerJacobian();
  const submit = submitTo(() => void compute(prompt, position, hookIn, hookOut, current.id));

  return (
    <Panel title={<>Layer Jacobian of {current.id ? <span className="mono">{current.id}</span> : "the language model"}, per token</>} testId="jacobian-layer">
      <form onSubmit={submit} className="gen-form" data-testid="jacobian-layer-form">
        <label className="field">
          <span className="field-label">Prompt</span>
          <textarea rows={2} value={prompt} onChange={(e) => setPrompt(e.target.value)} data-testid="jacobian-layer-prompt" />
        </label>
        <div style={{ display: "flex", gap: 10, flexWrap: "wrap", alignItems: "end" }}>
          <label className="field">
            <span className="field-label">position (−1 = last)</span>
            <input type="number" value={position} onChange={(e) => setPosition(Number(e.target.value))} data-testid="jacobian-layer-position" style={{ width: 90 }} />
          </label>
          <label className="field">
            <span className="field-label">from hook</span>
            <input value={hookIn} onChange={(e) => setHookIn(e.target.value)} data-testid="jacobian-layer-hook-in" className="mono" />
          </label>
          <label className="field">
            <span className="field-label">to hook</span>
            <input value={hookOut} onChange={(e) => setHookOut(e.target.value)} data-testid="jacobian-layer-hook-out" className="mono" />
          </label>
          <button type="submit" className="btn btn-primary" disabled={busy} data-testid="jacobian-layer-run">
            Compute
          </button>
          {busy && <Spinner />}
        </div>
      </form>
      {error && <ErrorBox message={error} testId="jacobian-layer-error" />}
      {res && <LayerJacobianResult res={res} />}
    </Panel>
  );
}
