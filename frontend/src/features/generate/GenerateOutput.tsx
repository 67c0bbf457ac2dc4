import { Panel } from "../../ui/components";
import { formatDuration } from "../../ui/format";
import { showSpacedToken } from "../../ui/Tokens";
import type { Generation } from "./api";
import type { GenerateRun } from "./state";

function TokenChips({ tokens, testId }: { tokens: string[]; testId: string }) {
  return (
    <div className="chips" data-testid={testId}>
      {tokens.map((t, i) => (
        <span key={i} className="chip mono" title={`#${i} ${JSON.stringify(t)}`} data-testid="token-chip">
          {showSpacedToken(t)}
        </span>
      ))}
    </div>
  );
}

function Transcript({
  prompt,
  gen,
  label,
  testId,
  showTokens,
}: {
  prompt: string;
  gen: Generation;
  label?: string;
  testId: string;
  showTokens: boolean;
}) {
  return (
    <div className="transcript-block">
      {label && <div className="transcript-label">{label}</div>}
      <pre className="transcript">
        <span className="prompt-text">{prompt}</span>
        <span className="completion-text" data-testid={testId}>
          {gen.completion}
        </span>
      </pre>
      {showTokens && <TokenChips tokens={gen.tokens} testId={`${testId}-tokens`} />}
    </div>
  );
}

/** The last run: the prompt and its completion (and the steered one, if any), tokens on demand, and
 * what produced it (model, token counts, sampling, time). Dimmed while the next run is on its way. */
export function GenerateOutput({
  run,
  busy,
  showTokens,
  onToggleTokens,
}: {
  run: GenerateRun;
  busy: boolean;
  showTokens: boolean;
  onToggleTokens: () => void;
}) {
  const resp = run.response;
  const nGenerated = resp.default.tokens.length;
  return (
    <Panel
      className={busy ? "stale" : ""}
      title="Output"
      actions={
        <button
          type="button"
          className="btn btn-small btn-ghost"
          onClick={onToggleTokens}
          aria-pressed={showTokens}
          data-testid="toggle-tokens"
        >
          {showTokens ? "Hide tokens" : "Show tokens"}
        </button>
      }
    >
      <div className={resp.steered ? "compare" : ""} data-testid="generate-output">
        <Transcript
          prompt={run.prompt}
          gen={resp.default}
          label={resp.steered ? "Default" : undefined}
          testId="completion"
          showTokens={showTokens}
        />
        {resp.steered && (
          <Transcript prompt={run.prompt} gen={resp.steered} label="Steered" testId="completion-steered" showTokens={showTokens} />
        )}
      </div>
      <div className="gen-meta muted small" data-testid="generate-meta">
        <span>
          model <span className="mono">{resp.model_id}</span>
        </span>
        <span>{resp.prompt_tokens} prompt tokens</span>
        <span>
          {nGenerated} generated token{nGenerated === 1 ? "" : "s"}
        </span>
        <span>
          {run.request.temperature === 0
            ? "greedy"
            : `T = ${run.request.temperature}${run.request.seed !== null && run.request.seed !== undefined ? `, seed ${run.request.seed}` : ""}`}
        </span>
        <span>{formatDuration(run.elapsedMs)}</span>
      </div>
    </Panel>
  );
}
