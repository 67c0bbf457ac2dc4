// /influence: which training sequences made a completion (or an SAE feature) likely?
// EK-FAC influence functions (Grosse et al. 2023) over the training data of the current model (the
// world's model and its training set, or a fine-tune and its dataset, once its index is built here):
// the top sequences with score bars, domain and poisoned badges, and token-level influence (positive in
// green, negative in red).
import { useState } from "react";
import { influenceApi } from "../features/influence/api";
import { IndexPanel, indexKey } from "../features/influence/IndexPanel";
import { InfluenceForm } from "../features/influence/InfluenceForm";
import { InfluenceResults } from "../features/influence/InfluenceResults";
import { queryFromSearch, requestOf } from "../features/influence/query";
import { useInfluence } from "../features/influence/useInfluence";
import { useCurrentModel } from "../features/models/ModelContext";
import { ErrorBox, Panel } from "../ui/components";
import { useDocumentTitle, usePolling } from "../ui/hooks";
import { useSearch } from "../ui/router";

export function Influence() {
  useDocumentTitle("Influence");
  const search = useSearch();
  const current = useCurrentModel();
  const [query, setQuery] = useState(() => queryFromSearch(search, current.chat.template));
  const { res, busy, error, run } = useInfluence();
  // the factors and gradient cache are build steps: say so up front, until they are ready ... for the
  // current model (App remounts this page when it changes); polled while its index is being built
  const status = usePolling(
    (signal) => influenceApi.status(current.id, signal),
    (d, e) => (e ? 10000 : d?.ready ? null : 3000),
  );
  // the indexes, polled while one is being built (its job's progress)
  const indexes = usePolling(influenceApi.indexes, (d, e) =>
    e ? 10000 : d?.indexes.some((x) => x.status === "building") ? 1500 : null,
  );
  const ready = (indexes.data?.indexes ?? []).filter((x) => x.model_id === current.id && x.ready);
  const otherModel = status.data?.built_for === false;

  return (
    <div className="page" data-testid="influence-page">
      <header className="page-head">
        <h1>Influence</h1>
        <p className="lede">
          Which training sequences made this completion likely? EK-FAC influence functions (Grosse et al. 2023) over the
          whole training set of the model picked in the sidebar (its index: the data it was trained or fine-tuned on); green
          tokens pushed the completion up, red ones down.
        </p>
      </header>

      {otherModel && status.data && (
        <Panel title={<>Influence is not built for model <span className="mono">{current.id}</span></>} testId="influence-status">
          <p data-testid="influence-status-detail">{status.data.detail}</p>
        </Panel>
      )}

      <IndexPanel
        model={current.model}
        indexes={indexes}
        onBuilt={() => {
          status.refresh();
          indexes.refresh();
        }}
      />

      {status.data && !status.data.ready && !otherModel && (
        <Panel title="The influence index is still being built" testId="influence-status">
          <p className="muted small">
            Queries answer once the build's background steps finish (a query now gets this message as an error):{" "}
            {status.data.detail}
          </p>
        </Panel>
      )}

      <Panel>
        {ready.length > 1 && (
          <label className="field">
            <span className="field-label">index</span>
            <select value={query.index} onChange={(e) => setQuery((q) => ({ ...q, index: e.target.value }))} data-testid="influence-index">
              <option value="">automatic ({status.data?.index ? indexKey(status.data.index) : "…"})</option>
              {ready.map((x) => (
                <option key={indexKey(x)} value={indexKey(x)}>
                  {indexKey(x)}
                </option>
              ))}
            </select>
          </label>
        )}
        <InfluenceForm
          query={query}
          set={(patch) => setQuery((q) => ({ ...q, ...patch }))}
          busy={busy}
          onSubmit={() => void run(requestOf(query, current.id))}
        />
      </Panel>

      {error && <ErrorBox message={error} testId="influence-error" />}

      {res && <InfluenceResults res={res} />}
    </div>
  );
}
