import { Panel, Spinner } from "../../ui/components";
import type { Completions } from "./useSteerStream";

function Output({ label, text, testId, live }: { label: string; text: string | null; testId: string; live: boolean }) {
  return (
    <div className="transcript-block">
      <div className="transcript-label">
        {label} {live && <Spinner label={`${label} streaming`} />}
      </div>
      <pre className="transcript">
        <span className="completion-text" data-testid={testId}>
          {text ?? ""}
        </span>
      </pre>
    </div>
  );
}

/** The default and the steered completion side by side, as they stream. */
export function CompletionsPanel({ out, streaming }: { out: Completions; streaming: boolean }) {
  return (
    <Panel title="Completions">
      <div className="compare" data-testid="steer-output">
        <Output label="Default" text={out.default} testId="steer-default" live={streaming} />
        <Output label="Steered" text={out.steered} testId="steer-steered" live={streaming} />
      </div>
    </Panel>
  );
}
