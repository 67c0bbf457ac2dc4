import { Badge } from "../../ui/components";
import type { Polled } from "../../ui/hooks";
import type { HealthResponse } from "./api";

/** The health summary in the sidebar: reachable, model ready, version. */
export function ServerStatus({ health }: { health: Polled<HealthResponse> }) {
  const h = health.data;
  return (
    <div className="sidebar-foot" data-testid="server-status">
      {health.error && !h ? (
        <Badge tone="bad">server unreachable</Badge>
      ) : h ? (
        <>
          <div>
            <span className={`dot ${health.error ? "dot-bad" : h.model_ready ? "dot-good" : "dot-warn"}`} />
            {health.error ? "connection lost" : h.model_ready ? "model ready" : "model not ready"}
          </div>
          <div className="muted mono small">v{h.version}</div>
        </>
      ) : (
        <span className="muted small">connecting…</span>
      )}
    </div>
  );
}
