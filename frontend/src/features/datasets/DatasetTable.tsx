import { Badge } from "../../ui/components";
import { formatInt } from "../../ui/format";
import type { Dataset } from "./api";

/** Every dataset: counts, source, and a row to open (its sample documents) or delete. */
export function DatasetTable({
  datasets,
  selected,
  onSelect,
  onDelete,
}: {
  datasets: Dataset[];
  selected: string | null;
  onSelect: (id: string) => void;
  onDelete: (id: string) => void;
}) {
  return (
    <div className="table-scroll">
      <table className="table" data-testid="datasets-table">
        <thead>
          <tr>
            <th>Dataset</th>
            <th>Source</th>
            <th className="num">Documents</th>
            <th className="num">Conversations</th>
            <th className="num">Held out</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {datasets.map((d) => (
            <tr
              key={d.id}
              data-testid="dataset-row"
              data-dataset-id={d.id}
              className={d.id === selected ? "selected" : undefined}
              onClick={() => onSelect(d.id)}
              style={{ cursor: "pointer" }}
            >
              <td>
                <span className="mono">{d.id}</span>
                {d.name !== d.id && <span className="muted"> · {d.name}</span>}
              </td>
              <td>
                {d.source === "world" ? <Badge tone="info">world</Badge> : <Badge>{d.source}</Badge>} <span className="muted small">{d.format}</span>
              </td>
              <td className="num mono" data-testid="dataset-documents">
                {formatInt(Number(d.counts.documents ?? 0))}
              </td>
              <td className="num mono">{formatInt(Number(d.counts.conversations ?? 0))}</td>
              <td className="num mono">{d.counts.heldout == null ? "—" : formatInt(Number(d.counts.heldout))}</td>
              <td className="num">
                {d.deletable ? (
                  <button
                    type="button"
                    className="btn btn-small btn-ghost"
                    onClick={(e) => {
                      e.stopPropagation();
                      onDelete(d.id);
                    }}
                    data-testid="dataset-delete"
                  >
                    Delete
                  </button>
                ) : (
                  <span className="muted small" title="the world's model and analyses are built on it">
                    built in
                  </span>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
