// /finetune: tune a registered model on a dataset (LoRA or full) into a new model; the runs and their loss curves.
import { useState } from "react";
import { FineTuneForm } from "../features/finetune/FineTuneForm";
import { FineTuneRuns } from "../features/finetune/FineTuneRuns";
import { useCurrentModel } from "../features/models/ModelContext";
import { useDocumentTitle } from "../ui/hooks";

export function FineTune() {
  useDocumentTitle("Fine-tune");
  const current = useCurrentModel();
  const [selected, setSelected] = useState<string | null>(null);
  return (
    <div className="page" data-testid="finetune-page">
      <header className="page-head">
        <h1>Fine-tune</h1>
        <p className="lede">
          Tune a model on your own conversations or text, with LoRA (Hu et al. 2021) or all its weights; the tuned model joins the model list with its
          parent, so every page can analyse it.
        </p>
      </header>
      <FineTuneForm parentId={current.id} onStarted={setSelected} />
      <FineTuneRuns selected={selected} onSelect={setSelected} />
    </div>
  );
}
