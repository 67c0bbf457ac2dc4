import { Plot } from "../../ui/Plot";
import type { LayerJacobian } from "./api";

/** One layer Jacobian: its definition, singular values (log scale) and top directions read out through
 * the unembedding and the SAE at the output hook. Used by the Jacobian page and the prompt inspector. */
export function LayerJacobianResult({ res }: { res: LayerJacobian }) {
  return (
    <div data-testid="jacobian-layer-result">
      <p className="muted small">
        ∂ {res.hook_out}[{res.position}] / ∂ {res.hook_in}[{res.position}] at token <span className="mono">{JSON.stringify(res.token)}</span>: {res.shape[0]}×
        {res.shape[1]}, ‖J‖_F = {res.frobenius_norm.toFixed(3)}, {res.seconds.toFixed(2)} s. {res.definition}.
      </p>
      <Plot
        figure={{
          data: [{ y: res.singular_values, type: "scatter", mode: "lines+markers", marker: { size: 3 } }],
          layout: { yaxis: { type: "log", title: { text: "σ_i" } }, xaxis: { title: { text: "i" } }, title: { text: "Layer-Jacobian singular values" } },
        }}
        height={260}
        testId="jacobian-layer-spectrum"
      />
      <table className="table compact" data-testid="jacobian-layer-directions">
        <thead>
          <tr>
            <th className="num">σ</th>
            <th>top tokens of +u</th>
            <th>top tokens of −u</th>
            <th>SAE features (cosine)</th>
          </tr>
        </thead>
        <tbody>
          {res.directions.map((d) => {
            const dd = d as {
              index: number;
              sigma: number;
              top_tokens?: { token: string }[];
              bottom_tokens?: { token: string }[];
              top_features?: { feature: number; cosine: number }[];
              sae_id?: string;
            };
            return (
              <tr key={dd.index}>
                <td className="num">{dd.sigma.toFixed(3)}</td>
                <td className="mono small">{(dd.top_tokens ?? []).map((t) => JSON.stringify(t.token)).join(" ")}</td>
                <td className="mono small">{(dd.bottom_tokens ?? []).map((t) => JSON.stringify(t.token)).join(" ")}</td>
                <td className="small">
                  {dd.top_features ? dd.top_features.slice(0, 4).map((t) => `#${t.feature} (${t.cosine.toFixed(2)})`).join(", ") : "no SAE at this hook"}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
