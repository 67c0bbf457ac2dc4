// Steering playground: pick a direction or SAE feature and a method, see the default and the
// steered completion side by side as they stream, the direction's candidate table, and the
// evaluation sweep (refusal rate vs alpha on harmful and harmless prompts).
import { useEffect, useReducer } from "react";
import { useCurrentModel } from "../features/models/ModelContext";
import { steeringApi } from "../features/steering/api";
import { CompletionsPanel } from "../features/steering/CompletionsPanel";
import { EvalSweepPanel } from "../features/steering/EvalSweepPanel";
import { INITIAL_STEER_FORM, nextTokenRequestOf, steerFormReducer } from "../features/steering/form";
import { NextTokenPanel } from "../features/steering/NextTokenPanel";
import { SteerForm } from "../features/steering/SteerForm";
import { useNextToken } from "../features/steering/useNextToken";
import { useSteerStream } from "../features/steering/useSteerStream";
import { useSteeringChoices } from "../features/steering/useSteeringChoices";
import { VectorPanel } from "../features/steering/VectorPanel";
import { ErrorBox, Panel } from "../ui/components";
import { useRequest } from "../ui/hooks";

const NEXT_TOKEN_DEBOUNCE_MS = 150;

export function Steer() {
  const [form, dispatch] = useReducer(steerFormReducer, INITIAL_STEER_FORM);
  // the current model's vectors, SAEs and chat format (App remounts this page when the model changes)
  const current = useCurrentModel();
  const choices = useSteeringChoices(current.id, (vectorId) => dispatch({ type: "defaultVector", vectorId }));
  const chat = current.chat;
  useEffect(() => {
    dispatch({ type: "chatFormat", format: chat });
  }, [chat]);
  const detail = useRequest(form.vectorId || null, (signal) => steeringApi.vector(form.vectorId, signal));
  const ntRequest = nextTokenRequestOf(form, current.id);
  const nextToken = useNextToken(ntRequest, NEXT_TOKEN_DEBOUNCE_MS);
  const stream = useSteerStream();
  const loadError = choices.error ?? detail.error;

  return (
    <div className="page steer">
      <header className="page-head">
        <h1>Steer</h1>
        <p className="lede">
          Edit the model's activations for one request and compare completions: ablate or add the refusal direction (Arditi et al.
          2024), affine concept editing (Marshall, Scherlis &amp; Belrose 2024), SAE features or single neurons.
        </p>
      </header>

      {loadError && <ErrorBox title="Could not load vectors" message={loadError} />}

      <Panel>
        <SteerForm
          form={form}
          dispatch={dispatch}
          vectors={choices.vectors}
          saes={choices.saes}
          streaming={stream.streaming}
          onRun={() => void stream.run(form, current.id)}
        />
      </Panel>

      {stream.error && <ErrorBox title="Generation failed" message={stream.error} testId="steer-error" />}

      <NextTokenPanel
        answer={nextToken.answer}
        error={nextToken.error}
        ready={ntRequest !== null}
        editPosition={form.method === "edit" ? Number(form.position) : null}
        onEditAt={(position) => dispatch({ type: "editAt", position })}
      />

      {stream.out && <CompletionsPanel out={stream.out} streaming={stream.streaming} />}
      {detail.data && <VectorPanel detail={detail.data} />}
      {form.vectorId && <EvalSweepPanel vectorId={form.vectorId} />}
    </div>
  );
}
