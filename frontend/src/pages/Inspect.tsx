// /inspect: the prompt inspector. Text -> tokens; a token's top features (click a token);
// every token shaded by one chosen feature's activation; links to the feature pages; the selected
// token's layer-Jacobian spectrum and top directions; live editing of one feature or neuron at the
// selected token (next-token distribution and greedy continuation before/after).
import { useMemo } from "react";
import { saesApi } from "../features/features/api";
import { InspectForm } from "../features/inspect/InspectForm";
import { useInspector } from "../features/inspect/inspector";
import { TokenEditPanel } from "../features/inspect/TokenEditPanel";
import { TokenFeaturesPanel } from "../features/inspect/TokenFeaturesPanel";
import { TokenJacobian } from "../features/inspect/TokenJacobian";
import { TokensPanel } from "../features/inspect/TokensPanel";
import { useCurrentModel } from "../features/models/ModelContext";
import { ErrorBox, Panel } from "../ui/components";
import { useDocumentTitle, usePolling } from "../ui/hooks";
import { replaceUrl, useSearch } from "../ui/router";

export function Inspect() {
  useDocumentTitle("Inspect");
  const search = useSearch();
  const urlSae = useMemo(() => new URLSearchParams(search).get("sae") ?? "", [search]);
  const current = useCurrentModel();
  // the current model's SAEs (App remounts this page when the model changes)
  const saes = usePolling((signal) => saesApi.saes(current.id, signal), (_d, e) => (e ? 5000 : null));
  const list = saes.data?.saes ?? [];
  const saeId = list.find((s) => s.id === urlSae)?.id ?? list[0]?.id ?? "";

  const { state, dispatch, submit, choose } = useInspector();
  const { run } = state;
  const tok = run && state.selected !== null ? run.res.tokens[state.selected] : null;
  const sae = list.find((s) => s.id === (run?.saeId ?? saeId));

  return (
    <div className="page" data-testid="inspect-page">
      <header className="page-head">
        <h1>Inspect</h1>
        <p className="lede">Run text through the model and an SAE: click a token to see its top features, choose a feature to shade every token by it.</p>
      </header>

      <Panel>
        <InspectForm
          state={state}
          dispatch={dispatch}
          saes={list}
          saeId={saeId}
          saesError={!!saes.error && !saes.data}
          chat={current.chat}
          onSaeChange={(id) => {
            replaceUrl(`/inspect?sae=${encodeURIComponent(id)}`);
            dispatch({ type: "saeChanged" });
          }}
          onRun={() => void submit(saeId)}
        />
      </Panel>

      {state.error && <ErrorBox title="Could not run the inspector" message={state.error} />}

      {run && (
        <div className="inspect-grid">
          <TokensPanel run={run} state={state} dispatch={dispatch} dSae={sae?.d_sae} onChoose={(f) => void choose(f)} />
          <TokenFeaturesPanel run={run} token={tok} feature={state.feature} onChoose={(f) => void choose(f)} />
          {tok && sae && (
            <TokenEditPanel
              key={`${run.saeId}|${run.text}@${String(tok.position)}`}
              text={run.text}
              position={tok.position}
              token={tok.token}
              features={tok.features}
              labels={run.res.labels ?? {}}
              sae={sae}
            />
          )}
          {tok && <TokenJacobian key={`${run.text}@${String(tok.position)}`} text={run.text} position={tok.position} modelId={current.id} />}
        </div>
      )}
    </div>
  );
}
