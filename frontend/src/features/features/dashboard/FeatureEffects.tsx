// What the feature does and is near: logit effects, enriched tokens and domains, nearest features,
// and the neurons it reads from and writes to.
import type { ReactNode } from "react";
import { Empty, Panel } from "../../../ui/components";
import { formatPercent } from "../../../ui/format";
import { Link } from "../../../ui/router";
import { showToken } from "../../../ui/Tokens";
import type { Dashboard } from "../api";
import { featuresUrl, featureUrl } from "../url";
import type { Logit, Pair, Summary } from "./summary";

function LogitColumn({ rows, sign, testId }: { rows: Logit[]; sign: "pos" | "neg"; testId: string }) {
  return (
    <div className="logit-col" data-testid={testId}>
      <h3 className="sub-head">{sign === "pos" ? "Positive logits" : "Negative logits"}</h3>
      {rows.length === 0 && <Empty>none</Empty>}
      <ul className="logit-list">
        {rows.map(([id, tok, v]) => (
          <li key={id} className={`logit logit-${sign}`}>
            <span className="logit-tok mono" title={`token id ${id}`}>
              {showToken(tok)}
            </span>
            <span className="num small">
              {v >= 0 ? "+" : ""}
              {v.toFixed(4)}
            </span>
          </li>
        ))}
      </ul>
    </div>
  );
}

export function LogitEffectsPanel({ s }: { s: Summary }) {
  return (
    <Panel title="Logit effects" testId="logit-effects">
      <div className="logit-cols">
        <LogitColumn rows={s.logits?.top ?? []} sign="pos" testId="logits-positive" />
        <LogitColumn rows={s.logits?.bottom ?? []} sign="neg" testId="logits-negative" />
      </div>
    </Panel>
  );
}

interface EnrichmentRow {
  key: string | number;
  cell: ReactNode;
  share: number;
  lift: number;
}

/** Share of the feature's activation mass and lift over the base rate, per token or per domain. */
function EnrichmentPanel({ title, testId, head, titled, rows }: { title: string; testId: string; head: string; titled: boolean; rows: EnrichmentRow[] }) {
  return (
    <Panel title={title} testId={testId}>
      {rows.length === 0 ? (
        <Empty>none</Empty>
      ) : (
        <table className="table compact">
          <thead>
            <tr>
              <th>{head}</th>
              <th className="num" title={titled ? "share of this feature's activation mass" : undefined}>
                share
              </th>
              <th className="num" title={titled ? "share relative to the token's frequency" : undefined}>
                lift
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.key}>
                {r.cell}
                <td className="num">{formatPercent(r.share, 1)}</td>
                <td className="num">{r.lift.toFixed(1)}×</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Panel>
  );
}

export function EnrichedTokensPanel({ s }: { s: Summary }) {
  const rows = (s.tokens ?? []).map((t) => ({
    key: t.id,
    cell: (
      <td>
        <span className="tok-chip mono">{showToken(t.token)}</span>
      </td>
    ),
    share: t.share,
    lift: t.lift,
  }));
  return <EnrichmentPanel title="Enriched tokens" testId="enriched-tokens" head="token" titled rows={rows} />;
}

export function EnrichedDomainsPanel({ s }: { s: Summary }) {
  const rows = (s.domains ?? []).map((t) => ({ key: t.name, cell: <td className="mono">{t.name}</td>, share: t.share, lift: t.lift }));
  return <EnrichmentPanel title="Domains" testId="enriched-domains" head="domain" titled={false} rows={rows} />;
}

export function NeighboursPanel({ d, s }: { d: Dashboard; s: Summary }) {
  return (
    <Panel title="Nearest features (decoder cosine)" testId="neighbours">
      {(s.neighbours ?? []).length === 0 ? (
        <Empty>none</Empty>
      ) : (
        <ul className="neighbour-list">
          {(s.neighbours ?? []).map(([n, c]) => (
            <li key={n}>
              <Link to={featureUrl(d.sae_id, n)} data-testid="neighbour-link">
                #{n}
              </Link>
              <span className="neighbour-label mono small">{d.neighbour_labels?.[String(n)] ?? ""}</span>
              <span className="num small">{c.toFixed(3)}</span>
            </li>
          ))}
        </ul>
      )}
    </Panel>
  );
}

function PairTable({ rows, head, testId }: { rows: Pair[]; head: [string, string]; testId: string }) {
  const mx = Math.max(1e-9, ...rows.map(([, v]) => Math.abs(v)));
  return (
    <table className="table compact" data-testid={testId}>
      <thead>
        <tr>
          <th>{head[0]}</th>
          <th className="num">{head[1]}</th>
          <th className="bar-col" />
        </tr>
      </thead>
      <tbody>
        {rows.map(([n, v]) => (
          <tr key={n}>
            <td className="mono">{n}</td>
            <td className="num">{v.toFixed(3)}</td>
            <td className="bar-col">
              <div className="mini-bar">
                <div className={v < 0 ? "neg" : ""} style={{ width: `${((Math.abs(v) / mx) * 100).toFixed(1)}%` }} />
              </div>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** The strongest weights: five most positive, three most negative. */
const strongest = (w: { top: Pair[]; bottom: Pair[] }) => [...w.top.slice(0, 5), ...w.bottom.slice(0, 3)];

export function FeatureNeuronsPanel({ d, s }: { d: Dashboard; s: Summary }) {
  return (
    <Panel
      title="Neurons"
      testId="feature-neurons"
      actions={
        <Link to={featuresUrl({ sae: d.sae_id, view: "neurons" })} className="small" data-testid="polysemanticity-link">
          polysemanticity view
        </Link>
      }
    >
      {!s.neurons_reads && !s.neurons_writes && <Empty>No neuron weights for this hook.</Empty>}
      {s.neurons_reads && (
        <>
          <h3 className="sub-head">Reads from</h3>
          <PairTable rows={strongest(s.neurons_reads)} head={["neuron", "weight"]} testId="neurons-reads" />
        </>
      )}
      {s.neurons_writes && (
        <>
          <h3 className="sub-head">Writes to</h3>
          <PairTable rows={strongest(s.neurons_writes)} head={["neuron", "weight"]} testId="neurons-writes" />
        </>
      )}
    </Panel>
  );
}
