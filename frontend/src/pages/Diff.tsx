// /diff: what changed between a tuned model and its parent (weights, activations, SAE features, refusal direction).
import { useState } from "react";
import { DiffForm } from "../features/diff/DiffForm";
import { DiffRuns } from "../features/diff/DiffRuns";
import { useCurrentModel } from "../features/models/ModelContext";
import { useDocumentTitle } from "../ui/hooks";

export function Diff() {
  useDocumentTitle("Diff");
  const current = useCurrentModel();
  const [selected, setSelected] = useState<string | null>(null);
  return (
    <div className="page" data-testid="diff-page">
      <header className="page-head">
        <h1>Diff</h1>
        <p className="lede">
          What did fine-tuning change? A tuned model against its parent: which blocks&apos; weights moved, where the residual stream diverges on the same
          tokens, which of the parent&apos;s SAE features fire differently, and whether the refusal direction stayed put.
        </p>
      </header>
      <DiffForm modelId={current.model?.parent ? current.id : null} onStarted={setSelected} />
      <DiffRuns selected={selected} onSelect={setSelected} />
    </div>
  );
}
