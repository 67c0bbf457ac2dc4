import { Spinner } from "../../ui/components";
import { INFLUENCE_PRESETS, type InfluenceQuery } from "./query";
import { submitTo } from "../../ui/events";

/** Presets, what to measure (a completion, or an SAE feature at a token), top k, TF-IDF and precise mode. */
export function InfluenceForm({
  query,
  set,
  busy,
  onSubmit,
}: {
  query: InfluenceQuery;
  set: (patch: Partial<InfluenceQuery>) => void;
  busy: boolean;
  onSubmit: () => void;
}) {
  return (
    <form className="gen-form" onSubmit={submitTo(onSubmit)}>
      <div style={{ display: "flex", gap: 12, flexWrap: "wrap", alignItems: "end" }}>
        {INFLUENCE_PRESETS.map((p) => (
          <button
            type="button"
            key={p.id}
            className="btn btn-ghost"
            data-testid={`influence-preset-${p.id}`}
            onClick={() =>
              set(query.chat ? { kind: "completion", prompt: p.instruction, completion: p.reply } : { kind: "completion", prompt: p.prompt, completion: p.completion })
            }
          >
            {p.label}
          </button>
        ))}
      </div>
      <div style={{ display: "flex", gap: 16, flexWrap: "wrap", alignItems: "center" }}>
        <label>
          <input type="radio" checked={query.kind === "completion"} onChange={() => set({ kind: "completion" })} data-testid="influence-kind-completion" />{" "}
          completion
        </label>
        <label>
          <input type="radio" checked={query.kind === "feature"} onChange={() => set({ kind: "feature" })} data-testid="influence-kind-feature" /> SAE
          feature at a token
        </label>
        <label title="render the user's message and the reply with the model's chat template; the assistant's turn is measured as a fine-tune trains it">
          <input type="checkbox" checked={query.chat} onChange={(e) => set({ chat: e.target.checked })} data-testid="influence-chat" /> as a chat
          (the model's template)
        </label>
      </div>
      <label className="field">
        <span className="field-label">{query.chat ? "User message" : "Prompt"}</span>
        <textarea value={query.prompt} onChange={(e) => set({ prompt: e.target.value })} rows={3} data-testid="influence-prompt" />
      </label>
      {query.kind === "completion" ? (
        <label className="field">
          <span className="field-label">
            {query.chat ? "Assistant reply (measurement: log p of the assistant's turn)" : "Completion (measurement: log p(completion | prompt))"}
          </span>
          <input value={query.completion} onChange={(e) => set({ completion: e.target.value })} data-testid="influence-completion" />
        </label>
      ) : (
        <div style={{ display: "flex", gap: 12, flexWrap: "wrap", alignItems: "end" }}>
          <label className="field">
            <span className="field-label">SAE id</span>
            <input value={query.saeId} onChange={(e) => set({ saeId: e.target.value })} data-testid="influence-sae" />
          </label>
          <label className="field">
            <span className="field-label">Feature</span>
            <input value={query.feature} onChange={(e) => set({ feature: e.target.value })} inputMode="numeric" data-testid="influence-feature" />
          </label>
          <label className="field">
            <span className="field-label">Token position (empty: last)</span>
            <input value={query.token} onChange={(e) => set({ token: e.target.value })} inputMode="numeric" data-testid="influence-token" />
          </label>
        </div>
      )}
      <div style={{ display: "flex", gap: 12, flexWrap: "wrap", alignItems: "end" }}>
        <label className="field">
          <span className="field-label">Top k</span>
          <input type="number" min={1} max={100} value={query.topK} onChange={(e) => set({ topK: Number(e.target.value) })} data-testid="influence-topk" />
        </label>
        <label>
          <input type="checkbox" checked={query.tfidf} onChange={(e) => set({ tfidf: e.target.checked })} data-testid="influence-tfidf" /> TF-IDF filter
        </label>
        <label title="Unchecked: the cache's ranking alone, without token scores (one backward pass, the query's)">
          <input type="checkbox" checked={query.exact} disabled={query.precise} onChange={(e) => set({ exact: e.target.checked })} data-testid="influence-exact" /> exact
          re-scoring of the top (token scores)
        </label>
        <label>
          <input type="checkbox" checked={query.precise} onChange={(e) => set({ precise: e.target.checked })} data-testid="influence-precise" /> precise
          (kronfluence, exact EK-FAC on the candidates)
        </label>
        <button type="submit" className="btn btn-primary" disabled={busy} data-testid="influence-run">
          Find influential sequences
        </button>
        {busy && <Spinner testId="influence-spinner" />}
      </div>
    </form>
  );
}
