// /influence: which training sequences made a completion (or an SAE feature) likely?
// EK-FAC influence functions (Grosse et al. 2023) over the demo world's training set: the top
// sequences with score bars, domain and poisoned badges, and token-level influence (positive in
// green, negative in red).
import { useState } from "react";
import { influenceApi } from "../features/influence/api";
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
  const [query, setQuery] = useState(() => queryFromSearch(search));
  const { res, busy, error, run } = useInfluence();
  // the factors and gradient cache are background build steps: say so up front, until they are ready
  // ... for the current model (App remounts this page when it changes); the index is of the world's model only
  const current = useCurrentModel();
  const status = usePolling(
    (signal) => influenceApi.status(current.id, signal),
    (d, e) => (e ? 10000 : d?.ready || d?.built_for === false ? null : 5000),
  );
  const otherModel = status.data?.built_for === false;

  return (
    <div className="page" data-testid="influence-page">
      <header className="page-head">
        <h1>Influence</h1>
        <p className="lede">
          Which training sequences made this completion likely? EK-FAC influence functions (Grosse et al. 2023) over the
          whole training set; green tokens pushed the completion up, red ones down.
        </p>
      </header>

      {otherModel && status.data && (
        <Panel title={<>Influence is not built for model <span className="mono">{current.id}</span></>} testId="influence-status">
          <p data-testid="influence-status-detail">{status.data.detail}</p>
        </Panel>
      )}

      {status.data && !status.data.ready && !otherModel && (
        <Panel title="The influence index is still being built" testId="influence-status">
          <p className="muted small">
            Queries answer once the build's background steps finish (a query now gets this message as an error):{" "}
            {status.data.detail}
          </p>
        </Panel>
      )}

      <Panel>
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
