import { Badge, Empty, Panel } from "../../ui/components";
import { showToken } from "../../ui/Tokens";
import type { InfluenceResponse } from "./api";

/** A token's influence as a background: green pushed the measurement up, red down. */
function tokenStyle(score: number, max: number) {
  if (!(max > 0) || score === 0) return undefined;
  const a = Math.min(1, Math.abs(score) / max);
  const rgb = score > 0 ? "34, 160, 90" : "220, 50, 50";
  return { backgroundColor: `rgba(${rgb}, ${(0.08 + 0.8 * a).toFixed(3)})` };
}

/** The top influential training sequences: score bar, domain and poisoned badges, token-level influence. */
export function InfluenceResults({ res }: { res: InfluenceResponse }) {
  const maxScore = Math.max(1e-30, ...res.results.map((r) => Math.abs(r.score)));
  return (
    <Panel title="Most influential training sequences" testId="influence-results">
      <p className="muted small" data-testid="influence-meta">
        {res.mode} mode · {res.candidates.toLocaleString()} of {res.n_train.toLocaleString()} sequences scored
        {res.tfidf.applied ? ` (TF-IDF filter: ${String(res.tfidf.candidates)} candidates)` : ""}
        {res.rescored ? `, the cache's top ${res.rescored.toLocaleString()} re-scored with exact EK-FAC` : ""}
        {res.rescored === 0 ? ", ranked by the cache alone (no token scores)" : ""} · measurement{" "}
        {String(res.measurement.f)} = {Number(res.measurement.value).toFixed(3)} ·{" "}
        <span data-testid="influence-phases" title="index: loading it (once) · measure: the query's gradient · scan: the query rotated into the eigenbases and the cache's score of every sequence · rescore: exact scores of the top">
          {res.seconds.toFixed(2)} s ({Object.entries(res.phases).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")})
        </span>
        <br />
        {res.sign}. {res.normalisation}.
      </p>
      {res.results.length === 0 ? (
        <Empty>No sequences.</Empty>
      ) : (
        <ol style={{ listStyle: "none", padding: 0, margin: 0 }}>
          {res.results.map((r) => {
            const tokMax = Math.max(1e-30, ...r.token_scores.map((t) => Math.abs(t.score ?? 0)));
            return (
              <li key={r.train_id} style={{ padding: "10px 0", borderBottom: "1px solid rgba(128,128,128,0.2)" }} data-testid="influence-result" data-train-id={r.train_id} data-poisoned={r.poisoned}>
                <div style={{ display: "flex", alignItems: "center", gap: 10, marginBottom: 6 }}>
                  <span className="mono small">#{r.train_id}</span>
                  <span title={r.score.toExponential(3)} style={{ display: "inline-block", width: 160, height: 10, background: "rgba(128,128,128,0.15)", borderRadius: 3, overflow: "hidden" }}>
                    <span
                      data-testid="influence-score-bar"
                      style={{
                        display: "block",
                        height: "100%",
                        width: `${((100 * Math.abs(r.score)) / maxScore).toFixed(1)}%`,
                        background: r.score >= 0 ? "rgb(34,160,90)" : "rgb(220,50,50)",
                      }}
                    />
                  </span>
                  <span className="mono small" data-testid="influence-score">
                    {r.score.toExponential(3)}
                  </span>
                  <Badge tone="info" testId="influence-domain">
                    {r.domain}
                  </Badge>
                  {r.poisoned && (
                    <Badge tone="bad" testId="influence-poisoned">
                      poisoned
                    </Badge>
                  )}
                </div>
                <div className="tok-text" data-testid="influence-tokens">
                  {r.token_scores.map((t, i) => (
                    <span
                      key={i}
                      className="tok"
                      style={t.score === null ? undefined : tokenStyle(t.score, tokMax)}
                      data-tip={`${JSON.stringify(t.token)}  ${t.score === null ? "not scored" : t.score.toExponential(2)}`}
                      data-score={t.score ?? undefined}
                    >
                      {showToken(t.token)}
                    </span>
                  ))}
                </div>
              </li>
            );
          })}
        </ol>
      )}
    </Panel>
  );
}
