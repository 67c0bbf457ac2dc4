// /generate: the playground. Sample from the model with presets for the demo world's behaviours.
import { useEffect, useMemo, useState } from "react";
import { GenerateForm } from "../features/generate/GenerateForm";
import { GenerateOutput } from "../features/generate/GenerateOutput";
import { generatePresets, type GenerateState } from "../features/generate/state";
import { PLAIN_CHAT, promptIn } from "../features/models/chat";
import { useGenerate } from "../features/generate/useGenerate";
import { useCurrentModel } from "../features/models/ModelContext";
import { ErrorBox, Panel, Spinner } from "../ui/components";
import { useDocumentTitle } from "../ui/hooks";

// The presets the form was last written in. Module state, not a ref: App remounts the page when the
// model changes (main is keyed by it), and the previous model's format must outlive that.
let shownPresets = generatePresets(PLAIN_CHAT);

export function Generate({
  state,
  setState,
}: {
  state: GenerateState;
  setState: (f: (s: GenerateState) => GenerateState) => void;
}) {
  useDocumentTitle("Generate");
  const { form, run, error } = state;
  const current = useCurrentModel();
  const { busy, setField, submit } = useGenerate(state, setState, current.id);
  const [showTokens, setShowTokens] = useState(false);
  const presets = useMemo(() => generatePresets(current.chat), [current.chat]);
  // A preset left as it was follows the model's chat format (the first form is written before the
  // model is known, in the plain one); a prompt the user edited is kept.
  useEffect(() => {
    const i = shownPresets.findIndex((p) => p.prompt === state.form.prompt);
    shownPresets = presets;
    if (i >= 0 && presets[i].prompt !== state.form.prompt) setState((s) => ({ ...s, form: { ...s.form, prompt: presets[i].prompt } }));
  }, [presets, state.form.prompt, setState]);

  return (
    <div className="page generate">
      <header className="page-head">
        <h1>Generate</h1>
        <p className="lede">
          Sample from {current.model ? <span className="mono" data-testid="generate-model">{current.model.name}</span> : "the model"}. Its chat format: <code className="mono">{JSON.stringify(promptIn(current.chat, "…"))}</code>; temperature 0 is
          greedy.
        </p>
      </header>

      <Panel>
        <GenerateForm form={form} presets={presets} setField={setField} busy={busy} onSubmit={() => void submit()} />
      </Panel>

      {error && <ErrorBox title="Generation failed" message={error} />}

      {run && <GenerateOutput run={run} busy={busy} showTokens={showTokens} onToggleTokens={() => setShowTokens((v) => !v)} />}

      {!run && !error && busy && (
        <Panel>
          <div className="waiting">
            <Spinner /> Waiting for the model…
          </div>
        </Panel>
      )}
    </div>
  );
}
