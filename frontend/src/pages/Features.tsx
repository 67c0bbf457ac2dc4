// /features: the SAE picker with quality metrics, the feature table (server-side sort, search,
// filters, pages) and each SAE's neuron polysemanticity. All state lives in the URL.
import { useMemo, useState, type ReactNode } from "react";
import { errorMessage } from "../api/client";
import { saesApi } from "../features/features/api";
import { DashboardsPending } from "../features/features/DashboardsPending";
import { FeatureTable } from "../features/features/FeatureTable";
import { Neurons } from "../features/features/Neurons";
import { SAEPicker } from "../features/features/SAEPicker";
import { SAEQuality } from "../features/features/SAEQuality";
import { TrainForm } from "../features/features/TrainForm";
import { featuresUrl, parseFeaturesUrl, type FeaturesUrl } from "../features/features/url";
import { useCurrentModel } from "../features/models/ModelContext";
import { Empty, ErrorBox, Panel, Spinner } from "../ui/components";
import { useDocumentTitle, usePolling } from "../ui/hooks";
import { navigate, replaceUrl, useSearch } from "../ui/router";

export function Features() {
  useDocumentTitle("Features");
  const search = useSearch();
  const url = useMemo(() => parseFeaturesUrl(search), [search]);
  const current = useCurrentModel();
  // the current model's SAEs (App remounts this page when the model changes)
  const saes = usePolling((signal) => saesApi.saes(current.id, signal), (d, e) => (e ? 5000 : d && d.saes.length > 0 && d.saes.every((s) => s.dashboards.state === "ready") ? null : 2000));
  const list = saes.data?.saes ?? [];
  const sae = list.find((s) => s.id === url.sae) ?? list[0];
  const [training, setTraining] = useState(false);

  const set = (patch: Partial<FeaturesUrl>, replace = false) => {
    const next = featuresUrl({ ...url, sae: sae?.id ?? url.sae, ...patch });
    if (next === window.location.pathname + window.location.search) return;
    if (replace) replaceUrl(next);
    else navigate(next);
  };

  let body: ReactNode;
  if (!saes.data && saes.error) body = <ErrorBox title="Could not list SAEs" message={errorMessage(saes.error)} />;
  else if (!saes.data) body = <Spinner label="Loading SAEs" />;
  else if (!sae)
    body = (
      <Panel>
        <Empty testId="features-empty">
          {current.id && current.id !== current.defaultId ? (
            <>
              No SAEs are trained for model <span className="mono">{current.id}</span> yet: train one with “Train an SAE…” above,
              or pick another model in the sidebar.
            </>
          ) : (
            "No SAEs yet. The build trains them in the background (see the jobs on the Overview page); this page refreshes by itself."
          )}
        </Empty>
      </Panel>
    );
  else
    body = (
      <>
        {url.sae && url.sae !== sae.id && <ErrorBox title="Unknown SAE" message={`There is no SAE ${url.sae}; showing ${sae.id}.`} />}
        <SAEPicker saes={list} selected={sae.id} onSelect={(id) => navigate(featuresUrl({ sae: id, view: url.view }))} />
        <SAEQuality sae={sae} />
        <div className="view-tabs" role="tablist" aria-label="View">
          <button type="button" role="tab" aria-selected={url.view === "features"} className={`view-tab${url.view === "features" ? " active" : ""}`} onClick={() => set({ view: "features" })} data-testid="view-features">
            Features
          </button>
          <button type="button" role="tab" aria-selected={url.view === "neurons"} className={`view-tab${url.view === "neurons" ? " active" : ""}`} onClick={() => set({ view: "neurons" })} data-testid="view-neurons">
            Neuron polysemanticity
          </button>
        </div>
        {sae.dashboards.state !== "ready" ? (
          <DashboardsPending sae={sae} onChanged={saes.refresh} onDeleted={() => {
            saes.refresh();
            replaceUrl(featuresUrl({ view: url.view })); // navigate() ignores a change of the query alone
          }} />
        ) : url.view === "neurons" ? (
          <Neurons sae={sae} />
        ) : (
          <FeatureTable sae={sae} url={url} set={set} />
        )}
      </>
    );

  return (
    <div className="page" data-testid="features-page">
      <header className="page-head">
        <h1>Features</h1>
        <p className="lede">Sparse autoencoder dictionaries of the model’s activations: pick an SAE, then sort, search and open its features.</p>
        <button type="button" className="btn btn-ghost" onClick={() => setTraining(!training)} aria-expanded={training} data-testid="train-toggle">
          {training ? "Hide the training form" : "Train an SAE…"}
        </button>
      </header>
      {training && (
        <TrainForm
          modelId={current.id}
          onTrained={(id) => {
            saes.refresh();
            navigate(featuresUrl({ sae: id, view: "features" }));
          }}
        />
      )}
      {body}
    </div>
  );
}
