import { errorMessage } from "../../api/client";
import { Badge, ErrorBox, Panel, Spinner } from "../../ui/components";
import type { Polled } from "../../ui/hooks";
import type { HealthResponse } from "./api";

/** What each built-in world analyses (LOUPE_WORLD). */
const WORLDS: Record<string, string> = {
  demo: "a 0.9M-parameter GPT-NeoX Loupe trains on its own corpus",
  micro: "the seconds-long test world",
  smollm2: "SmolLM2-135M-Instruct (dequantized Q4_1) on the Python documentation",
};

/** This workspace as /api/health reports it: path, database, model readiness, server version. */
export function WorkspacePanel({ health }: { health: Polled<HealthResponse> }) {
  const h = health.data;
  return (
    <Panel title="Workspace">
      {health.error && !h ? (
        <ErrorBox title="Server unreachable" message={errorMessage(health.error)} testId="health-error" />
      ) : !h ? (
        <Spinner />
      ) : (
        <dl className="kv-list" data-testid="workspace-info">
          <div className="kv">
            <dt className="kv-key">Workspace</dt>
            <dd className="kv-value mono" data-testid="workspace-path" title={h.workspace}>
              {h.workspace}
            </dd>
          </div>
          <div className="kv">
            <dt className="kv-key">World</dt>
            <dd className="kv-value" data-testid="world" title={WORLDS[h.world] ?? h.world}>
              <span className="mono">{h.world}</span>
              {WORLDS[h.world] ? <span className="muted"> · {WORLDS[h.world]}</span> : null}
            </dd>
          </div>
          <div className="kv">
            <dt className="kv-key">Database</dt>
            <dd className="kv-value" data-testid="database-kind">
              <Badge tone="neutral">{h.database}</Badge>
            </dd>
          </div>
          <div className="kv">
            <dt className="kv-key">Model</dt>
            <dd className="kv-value" data-testid="model-ready">
              {h.model_ready ? <Badge tone="good">ready</Badge> : <Badge tone="warn">not ready</Badge>}
            </dd>
          </div>
          <div className="kv">
            <dt className="kv-key">Server</dt>
            <dd className="kv-value mono">
              loupe {h.version} · {h.status}
            </dd>
          </div>
        </dl>
      )}
    </Panel>
  );
}
