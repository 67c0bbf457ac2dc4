import { errorMessage } from "../../api/client";
import { Badge, ErrorBox, Panel, Spinner } from "../../ui/components";
import { formatInt } from "../../ui/format";
import { useRequest } from "../../ui/hooks";
import { datasetsApi, type SampleDocument } from "./api";

/** One dataset's counts and its first documents (conversations turn by turn). */
export function DatasetSamples({ id }: { id: string }) {
  const d = useRequest(id, (signal) => datasetsApi.dataset(id, 5, signal));
  if (d.error) return <ErrorBox title={`Could not load ${id}`} message={errorMessage(d.error)} />;
  if (!d.data) return <Spinner label="Loading the dataset" />;
  const ds = d.data;
  return (
    <Panel title={<span className="mono">{ds.id}</span>} testId="dataset-detail">
      <div className="kv-list">
        {Object.entries(ds.counts)
          .filter(([, v]) => typeof v === "number")
          .map(([k, v]) => (
            <div className="kv" key={k}>
              <span className="kv-key">{k}</span>
              <span className="kv-value mono">{formatInt(Number(v))}</span>
            </div>
          ))}
        {ds.sha256 && (
          <div className="kv">
            <span className="kv-key">sha256</span>
            <span className="kv-value mono small">{ds.sha256.slice(0, 16)}…</span>
          </div>
        )}
      </div>
      <h3 className="sub-head">Sample documents</h3>
      {!ds.built && <p className="muted">The world&apos;s build has not written this dataset yet.</p>}
      <div className="examples">
        {(ds.samples ?? []).map((s: SampleDocument) => (
          <div className="example" key={s.id} data-testid="dataset-sample">
            <div className="small muted">
              #{s.id} · <Badge tone={s.split === "heldout" ? "warn" : "neutral"}>{s.split}</Badge> · {s.domain}
            </div>
            {s.messages ? (
              s.messages.map((m, i) => (
                <div key={i} className="small">
                  <b>{m.role}:</b> <span style={{ whiteSpace: "pre-wrap" }}>{m.content}</span>
                </div>
              ))
            ) : (
              <div className="small" style={{ whiteSpace: "pre-wrap" }}>
                {s.text}
                {s.truncated && "…"}
              </div>
            )}
          </div>
        ))}
      </div>
    </Panel>
  );
}
