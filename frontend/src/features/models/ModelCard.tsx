import type { ModelInfo } from "./api";
import { formatCompact, formatInt } from "../../ui/format";
import { Badge } from "../../ui/components";

const SOURCE_LABEL: Record<string, string> = {
  demo: "demo world",
  "hf-dir": "local HF directory",
  hub: "Hugging Face hub",
};

export function ModelCard({ model }: { model: ModelInfo }) {
  const stats: [string, string, string][] = [
    ["Layers", formatInt(model.n_layers), "n_layers"],
    ["d_model", formatInt(model.d_model), "d_model"],
    ["d_mlp", formatInt(model.d_mlp), "d_mlp"],
    ["Context", formatInt(model.n_ctx), "n_ctx"],
    ["Vocab", formatInt(model.d_vocab), "d_vocab"],
    ["Params", formatCompact(model.n_params), "n_params"],
  ];
  return (
    <div className="model-card" data-testid="model-card" data-model-id={model.id}>
      <div className="model-card-head">
        <div>
          <div className="model-name" data-testid="model-name">
            {model.name}
          </div>
          <div className="model-id mono">{model.id}</div>
        </div>
        <div className="model-badges">
          <Badge tone="info" testId="model-source">
            {SOURCE_LABEL[model.source] ?? model.source}
          </Badge>
          {model.loaded ? <Badge tone="good">loaded</Badge> : <Badge>not loaded</Badge>}
        </div>
      </div>
      <dl className="stat-grid">
        {stats.map(([label, value, key]) => (
          <div className="stat" key={key} data-testid={`model-${key}`}>
            <dt>{label}</dt>
            <dd className="mono" title={key === "n_params" ? `${formatInt(model.n_params)} parameters` : undefined}>
              {value}
            </dd>
          </div>
        ))}
      </dl>
      <div className="kv">
        <span className="kv-key">Path</span>
        <span className="kv-value mono" title={model.path}>
          {model.path}
        </span>
      </div>
      {model.hook_names.length > 0 && (
        <details className="hooks">
          <summary>
            {model.hook_names.length} hook point{model.hook_names.length === 1 ? "" : "s"}
          </summary>
          <ul className="hook-list mono">
            {model.hook_names.map((h) => (
              <li key={h}>{h}</li>
            ))}
          </ul>
        </details>
      )}
    </div>
  );
}
