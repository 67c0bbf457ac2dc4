import { Link } from "../../../ui/router";
import { featuresUrl, featureUrl } from "../url";

/** Back to the SAE's table, previous and next feature (next is disabled at the last, once d_sae is known). */
export function FeatureNav({ saeId, index, dSae }: { saeId: string; index: number; dSae: number | undefined }) {
  return (
    <div className="feature-nav">
      <Link to={featuresUrl({ sae: saeId })} className="btn btn-small btn-ghost" data-testid="back-to-features">
        ← all features
      </Link>
      {index > 0 ? (
        <Link to={featureUrl(saeId, index - 1)} className="btn btn-small" data-testid="prev-feature" aria-label="previous feature">
          ‹ #{index - 1}
        </Link>
      ) : (
        <button type="button" className="btn btn-small" disabled aria-label="previous feature">
          ‹
        </button>
      )}
      {dSae === undefined || index < dSae - 1 ? (
        <Link to={featureUrl(saeId, index + 1)} className="btn btn-small" data-testid="next-feature" aria-label="next feature">
          #{index + 1} ›
        </Link>
      ) : (
        <button type="button" className="btn btn-small" disabled aria-label="next feature">
          ›
        </button>
      )}
    </div>
  );
}
