import { useState } from "react";
import { modelsApi } from "./features/models/api";
import { INITIAL_GENERATE_STATE, type GenerateState } from "./features/generate/state";
import { Badge } from "./ui/components";
import { usePolling } from "./ui/hooks";
import { FeaturePage } from "./pages/Feature";
import { Features } from "./pages/Features";
import { Generate } from "./pages/Generate";
import { Influence } from "./pages/Influence";
import { Inspect } from "./pages/Inspect";
import { Jacobian } from "./pages/Jacobian";
import { Overview } from "./pages/Overview";
import { Steer } from "./pages/Steer";
import { Link, usePath } from "./ui/router";

const NAV = [
  { path: "/", label: "Overview", testId: "nav-overview" },
  { path: "/generate", label: "Generate", testId: "nav-generate" },
  { path: "/features", label: "Features", testId: "nav-features" },
  { path: "/inspect", label: "Inspect", testId: "nav-inspect" },
  { path: "/steer", label: "Steer", testId: "nav-steer" },
  { path: "/influence", label: "Influence", testId: "nav-influence" },
  { path: "/jacobian", label: "Jacobian", testId: "nav-jacobian" },
];

/** A nav entry is active on its page and the pages under it (/features/x/1 -> Features). */
function navActive(path: string, navPath: string): boolean {
  return path === navPath || (navPath !== "/" && path.startsWith(`${navPath}/`));
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function NotFound({ path }: { path: string }) {
  return (
    <div className="page">
      <header className="page-head">
        <h1>Not found</h1>
        <p className="lede">
          There is no page at <span className="mono">{path}</span>. Go to the <Link to="/">Overview</Link>.
        </p>
      </header>
    </div>
  );
}

export function App() {
  const path = usePath();
  const health = usePolling(modelsApi.health, (d, e) => (e || !d?.model_ready ? 3000 : 15000));
  // Shared by pages so the Generate form and its last output survive navigation.
  const models = usePolling(modelsApi.models, (_d, e) => (e ? 5000 : 30000));
  const [genState, setGenState] = useState<GenerateState>(INITIAL_GENERATE_STATE);

  const featureMatch = /^\/features\/([^/]+)\/(\d+)$/.exec(path);
  let page;
  if (path === "/") page = <Overview health={health} models={models} />;
  else if (path === "/generate") page = <Generate state={genState} setState={setGenState} models={models.data?.models ?? []} />;
  else if (path === "/features") page = <Features />;
  else if (featureMatch) page = <FeaturePage saeId={safeDecode(featureMatch[1])} index={Number(featureMatch[2])} />;
  else if (path === "/inspect") page = <Inspect />;
  else if (path === "/steer") page = <Steer />;
  else if (path === "/influence") page = <Influence />;
  else if (path === "/jacobian") page = <Jacobian />;
  else page = <NotFound path={path} />;

  const h = health.data;
  return (
    <div className="shell">
      <aside className="sidebar">
        <Link to="/" className="brand" aria-label="Loupe home">
          <svg viewBox="0 0 32 32" width="22" height="22" aria-hidden>
            <circle cx="13" cy="13" r="9" fill="none" stroke="currentColor" strokeWidth="3.5" />
            <line x1="20" y1="20" x2="29" y2="29" stroke="currentColor" strokeWidth="4" strokeLinecap="round" />
          </svg>
          <span>Loupe</span>
        </Link>
        <nav className="nav" aria-label="Main">
          {NAV.map((n) => (
            <Link
              key={n.path}
              to={n.path}
              className={`nav-link${navActive(path, n.path) ? " active" : ""}`}
              aria-current={navActive(path, n.path) ? "page" : undefined}
              data-testid={n.testId}
            >
              {n.label}
            </Link>
          ))}
        </nav>
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
      </aside>
      <main className="main">{page}</main>
    </div>
  );
}
