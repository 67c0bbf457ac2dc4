import { errorMessage } from "../../api/client";
import { Empty, ErrorBox, Panel, Spinner } from "../../ui/components";
import type { Polled } from "../../ui/hooks";
import type { ModelsResponse } from "./api";
import { ModelCard } from "./ModelCard";
import { useCurrentModel } from "./ModelContext";

/** The model under study (the sidebar's current one) and a list of the others. */
export function ModelPanel({ models }: { models: Polled<ModelsResponse> }) {
  const current = useCurrentModel();
  const modelList = models.data?.models ?? [];
  const primary = modelList.find((m) => m.id === current.id) ?? modelList[0];
  const others = modelList.filter((m) => m !== primary);
  return (
    <Panel title="Model">
      {models.loading && !models.data ? (
        <Spinner />
      ) : models.error && !models.data ? (
        <ErrorBox title="Could not load models" message={errorMessage(models.error)} testId="models-error" />
      ) : primary ? (
        <>
          <ModelCard model={primary} />
          {others.length > 0 && (
            <div className="other-models">
              <h3>Other models</h3>
              <ul>
                {others.map((m) => (
                  <li key={m.id}>
                    <span className="mono">{m.name}</span> <span className="muted">({m.source}, {m.n_layers} layers)</span>
                  </li>
                ))}
              </ul>
            </div>
          )}
        </>
      ) : (
        <div className="model-card" data-testid="model-card">
          <Empty>
            No model registered yet. Build the demo world with <span className="mono">loupe build</span>, or point Loupe at a
            Hugging Face model.
          </Empty>
        </div>
      )}
    </Panel>
  );
}
