// The shell: sidebar (nav, server status) and the page for the current path. Only this file imports pages.
import { useState, type ReactNode } from "react";
import { TokenDialog } from "./features/auth/TokenDialog";
import { INITIAL_GENERATE_STATE, type GenerateState } from "./features/generate/state";
import { modelsApi } from "./features/models/api";
import { ModelPicker, ModelProvider, useCurrentModel } from "./features/models/ModelContext";
import { ServerStatus } from "./features/models/ServerStatus";
import { Datasets } from "./pages/Datasets";
import { Diff } from "./pages/Diff";
import { FeaturePage } from "./pages/Feature";
import { FineTune } from "./pages/FineTune";
import { Features } from "./pages/Features";
import { Generate } from "./pages/Generate";
import { Influence } from "./pages/Influence";
import { Inspect } from "./pages/Inspect";
import { Jacobian } from "./pages/Jacobian";
import { NotFound } from "./pages/NotFound";
import { Overview } from "./pages/Overview";
import { Steer } from "./pages/Steer";
import { Spinner } from "./ui/components";
import { usePolling } from "./ui/hooks";
import { Link, usePath } from "./ui/router";

const NAV = [
  { path: "/", label: "Overview", testId: "nav-overview" },
  { path: "/generate", label: "Generate", testId: "nav-generate" },
  { path: "/features", label: "Features", testId: "nav-features" },
  { path: "/datasets", label: "Datasets", testId: "nav-datasets" },
  { path: "/inspect", label: "Inspect", testId: "nav-inspect" },
  { path: "/steer", label: "Steer", testId: "nav-steer" },
  { path: "/influence", label: "Influence", testId: "nav-influence" },
  { path: "/jacobian", label: "Jacobian", testId: "nav-jacobian" },
  { path: "/finetune", label: "Fine-tune", testId: "nav-finetune" },
  { path: "/diff", label: "Diff", testId: "nav-diff" },
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

/** The page, remounted when the current model changes (its requests and lists are of one model). */
function CurrentPage({ listed, children }: { listed: boolean; children: ReactNode }) {
  const { id } = useCurrentModel();
  return (
    <main className="main" key={id ?? ""}>
      {listed ? children : <Spinner label="Loading models" />}
    </main>
  );
}

export function App() {
  const path = usePath();
  // Polled here, for the sidebar and the pages that show them.
  const health = usePolling(modelsApi.health, (d, e) => (e || !d?.model_ready ? 3000 : 15000));
  const models = usePolling(modelsApi.models, (_d, e) => (e ? 5000 : 30000));
  // Held here so the Generate form and its last output survive navigation.
  const [genState, setGenState] = useState<GenerateState>(INITIAL_GENERATE_STATE);

  const featureMatch = /^\/features\/([^/]+)\/(\d+)$/.exec(path);
  let page;
  if (path === "/") page = <Overview health={health} models={models} />;
  else if (path === "/generate") page = <Generate state={genState} setState={setGenState} />;
  else if (path === "/features") page = <Features />;
  else if (path === "/datasets") page = <Datasets />;
  else if (featureMatch) page = <FeaturePage saeId={safeDecode(featureMatch[1])} index={Number(featureMatch[2])} />;
  else if (path === "/inspect") page = <Inspect />;
  else if (path === "/steer") page = <Steer />;
  else if (path === "/influence") page = <Influence />;
  else if (path === "/jacobian") page = <Jacobian />;
  else if (path === "/finetune") page = <FineTune />;
  else if (path === "/diff") page = <Diff />;
  else page = <NotFound path={path} />;

  // Pages wait for the model list (so that they start with the chosen model), and start afresh when it changes.
  const listed = models.data !== undefined || models.error !== null;
  return (
    <ModelProvider list={models.data}>
      <div className="shell">
        <aside className="sidebar">
          <Link to="/" className="brand" aria-label="Loupe home">
            <svg viewBox="0 0 32 32" width="22" height="22" aria-hidden>
              <circle cx="13" cy="13" r="9" fill="none" stroke="currentColor" strokeWidth="3.5" />
              <line x1="20" y1="20" x2="29" y2="29" stroke="currentColor" strokeWidth="4" strokeLinecap="round" />
            </svg>
            <span>Loupe</span>
          </Link>
          <ModelPicker />
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
          <ServerStatus health={health} />
        </aside>
        <CurrentPage listed={listed}>{page}</CurrentPage>
      </div>
      <TokenDialog />
    </ModelProvider>
  );
}
