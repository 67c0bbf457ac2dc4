// /features/{saeId}/{index}: one feature's dashboard (after Neuronpedia's feature page and the
// Towards Monosemanticity browser): label, stats, histogram, top examples, interval samples,
// enrichment, logit effects, neighbours, neurons, and the feature on text of your own.
import { saesApi } from "../features/features/api";
import {
  EnrichedDomainsPanel,
  EnrichedTokensPanel,
  FeatureNeuronsPanel,
  LogitEffectsPanel,
  NeighboursPanel,
} from "../features/features/dashboard/FeatureEffects";
import { HistogramPanel, IntervalsPanel, TopExamplesPanel } from "../features/features/dashboard/FeatureExamples";
import { FeatureNav } from "../features/features/dashboard/FeatureNav";
import { FeatureStats } from "../features/features/dashboard/FeatureStats";
import { StaleLabel } from "../features/features/dashboard/LabelEditor";
import { summaryOf } from "../features/features/dashboard/summary";
import { TryText } from "../features/features/dashboard/TryText";
import { featuresUrl } from "../features/features/url";
import { ErrorBox, Spinner } from "../ui/components";
import { formatInt } from "../ui/format";
import { useDocumentTitle, useRequest } from "../ui/hooks";
import { Link } from "../ui/router";

export function FeaturePage({ saeId, index }: { saeId: string; index: number }) {
  useDocumentTitle(`${saeId} #${index}`);
  const { data: d, error, loading, setData } = useRequest(`${saeId}/${index}`, (signal) => saesApi.feature(saeId, index, signal));
  const nav = <FeatureNav saeId={saeId} index={index} dSae={d?.d_sae} />;

  if (!d) {
    return (
      <div className="page" data-testid="feature-page">
        <header className="page-head feature-head">
          <h1>
            Feature <span className="mono">#{index}</span>
            {error && (
              <>
                {" "}
                <span className="muted small mono">{saeId}</span>
              </>
            )}
          </h1>
          {nav}
        </header>
        {error ? <ErrorBox title="Could not load this feature" message={error} /> : <Spinner label="Loading feature" />}
      </div>
    );
  }

  const s = summaryOf(d);
  return (
    <div className={`page${loading ? " stale" : ""}`} data-testid="feature-page" data-sae-id={d.sae_id} data-index={d.index}>
      <header className="page-head feature-head">
        <div>
          <div className="crumbs small">
            <Link to={featuresUrl({ sae: d.sae_id })}>{d.sae_id}</Link>{" "}
            <span className="muted">
              · {d.hook_name} · {formatInt(d.d_sae)} features
            </span>
          </div>
          <h1 data-testid="feature-title">
            Feature <span className="mono">#{d.index}</span>{" "}
            <span className="feature-title-label" data-testid="feature-display-label">
              {d.label ? d.label : <span className="mono muted">{d.auto_label}</span>}
            </span>
            {d.stale_label && <StaleLabel stale={d.stale_label} />}
          </h1>
        </div>
        {nav}
      </header>

      <FeatureStats d={d} onLabelSaved={(label) => setData({ ...d, label, stale_label: null })} />

      <div className="feature-grid">
        <div className="feature-main">
          <HistogramPanel d={d} />
          <TopExamplesPanel d={d} />
          <IntervalsPanel d={d} />
          <TryText d={d} />
        </div>
        <div className="feature-side">
          <LogitEffectsPanel s={s} />
          <EnrichedTokensPanel s={s} />
          <EnrichedDomainsPanel s={s} />
          <NeighboursPanel d={d} s={s} />
          <FeatureNeuronsPanel d={d} s={s} />
        </div>
      </div>
    </div>
  );
}
