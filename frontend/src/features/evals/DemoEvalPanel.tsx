import { useMemo } from "react";
import { errorMessage } from "../../api/client";
import { Empty, ErrorBox, Panel, Spinner } from "../../ui/components";
import type { Polled } from "../../ui/hooks";
import type { EvalsResponse } from "./api";
import { DemoEval, latestEval } from "./DemoEval";

/** The latest evaluation of kind "demo" (the demo world's behaviour targets). */
export function DemoEvalPanel({ evals }: { evals: Polled<EvalsResponse> }) {
  const demo = useMemo(() => latestEval(evals.data?.evals ?? [], "demo"), [evals.data]);
  return (
    <Panel title="Latest demo evaluation">
      {evals.loading && !evals.data ? (
        <Spinner />
      ) : evals.error && !evals.data ? (
        <ErrorBox title="Could not load evaluations" message={errorMessage(evals.error)} testId="evals-error" />
      ) : demo ? (
        <DemoEval ev={demo} />
      ) : (
        <Empty>
          No demo evaluation yet. Run <span className="mono">loupe eval</span> once the demo model is built.
        </Empty>
      )}
    </Panel>
  );
}
