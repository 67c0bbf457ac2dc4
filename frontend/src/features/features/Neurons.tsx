import { useMemo } from "react";
import { ErrorBox, Panel, Spinner } from "../../ui/components";
import { formatInt } from "../../ui/format";
import { useRequest } from "../../ui/hooks";
import { Plot, type Figure } from "../../ui/Plot";
import { saesApi, type SAE } from "./api";

export function polysemanticityFigure(values: number[], saeId: string): Figure {
  return {
    data: [
      {
        type: "histogram",
        x: values,
        nbinsx: 40,
        marker: { color: "#4f6bed" },
        hovertemplate: "%{x}<br>%{y} neurons<extra></extra>",
      },
    ],
    layout: {
      title: { text: `${saeId}: effective number of features per neuron`, font: { size: 12 } },
      xaxis: { title: { text: "participation ratio of feature loads" } },
      yaxis: { title: { text: "neurons" } },
      bargap: 0.05,
      showlegend: false,
    },
  };
}

/** Neuron polysemanticity: how many features load on each neuron of the SAE's hook. */
export function Neurons({ sae }: { sae: SAE }) {
  const { data, error } = useRequest(sae.id, (signal) => saesApi.neurons(sae.id, signal));
  const fig = useMemo(() => (data ? polysemanticityFigure(data.polysemanticity, sae.id) : null), [data, sae.id]);

  return (
    <Panel title="Neuron polysemanticity" testId="neurons-panel">
      {error && <ErrorBox title="No neuron view" message={error} />}
      {!data && !error && <Spinner label="Loading neurons" />}
      {data && (
        <div className="grid-2">
          <div>
            <p className="hint">
              For each neuron of <span className="mono">{data.units ?? sae.hook_name}</span>: the participation ratio (Σ a²)² / Σ a⁴ of live features’ unit
              decoder loads a on it — the effective number of features that load on the neuron (1 if one feature does, k for k equal loads). Mean{" "}
              <strong data-testid="neurons-mean">{data.mean.toFixed(2)}</strong> over {formatInt(data.polysemanticity.length)} neurons.
            </p>
            <Plot figure={fig} testId="neurons-histogram" />
          </div>
          <div>
            <h3 className="sub-head">Most polysemantic neurons</h3>
            <table className="table compact" data-testid="polysemantic-table">
              <thead>
                <tr>
                  <th className="num">neuron</th>
                  <th className="num">effective features</th>
                </tr>
              </thead>
              <tbody>
                {data.most_polysemantic.map(([n, pr]) => (
                  <tr key={n}>
                    <td className="num mono">{n}</td>
                    <td className="num">{pr.toFixed(2)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </div>
      )}
    </Panel>
  );
}
