import { useMemo } from "react";
import { errorMessage } from "../../api/client";
import { Empty, ErrorBox, Panel, Spinner } from "../../ui/components";
import type { Polled } from "../../ui/hooks";
import type { EvalsResponse } from "./api";
import { DemoEval, latestEval } from "./DemoEval";

/** The latest behaviour evaluation of the world: kind "demo" (the demo world's targets) or "behaviour"
 * (a real model's refusal rates and held-out loss, e.g. the SmolLM2 world). */
export function DemoEvalPanel({ evals, world }: { evals: Polled<EvalsResponse>; world?: string }) {
  const kind = world === "smollm2" ? "behaviour" : "demo";
  const demo = useMemo(() => latestEval(evals.data?.evals ?? [], kind), [evals.data, kind]);
  return (
    <Panel title={kind === "demo" ? "Latest demo evaluation" : "Latest behaviour evaluation"}>
      {evals.loading && !evals.data ? (
        <Spinner />
      ) : evals.error && !evals.data ? (
        <ErrorBox title="Could not load evaluations" message={errorMessage(evals.error)} testId="evals-error" />
      ) : demo ? (
        <DemoEval ev={demo} />
      ) : (
        <Empty>
          No {kind} evaluation yet: the build runs it once the model is there (or run{" "}
          <span className="mono">loupe eval demo</span>).
        </Empty>
      )}
    </Panel>
  );
}
