// Where the feature fires: its activation histogram, top examples and samples per activation interval.
import { Empty, Panel } from "../../../ui/components";
import { formatPercent } from "../../../ui/format";
import { Plot, type Figure } from "../../../ui/Plot";
import { TokenText } from "../../../ui/Tokens";
import type { Dashboard, Example } from "../api";

function ExampleRow({ ex, max, testId = "top-example" }: { ex: Example; max: number; testId?: string }) {
  return (
    <div className="example" data-testid={testId}>
      <span className="example-act num" title="activation at the example's token">
        {ex.activation.toFixed(2)}
      </span>
      <TokenText tokens={ex.tokens} max={max} center={ex.center} />
    </div>
  );
}

export function HistogramPanel({ d }: { d: Dashboard }) {
  return (
    <Panel title="Activation histogram" testId="histogram-panel">
      <Plot figure={d.histogram.figure as Figure} height={240} testId="feature-histogram" />
    </Panel>
  );
}

export function TopExamplesPanel({ d }: { d: Dashboard }) {
  return (
    <Panel title={`Top activations (${d.top_examples.length})`} testId="top-examples">
      {d.top_examples.length === 0 ? (
        <Empty>This feature never fired on the dashboard tokens.</Empty>
      ) : (
        <div className="examples">
          {d.top_examples.map((ex, i) => (
            <ExampleRow key={i} ex={ex} max={d.max_activation} />
          ))}
        </div>
      )}
    </Panel>
  );
}

export function IntervalsPanel({ d }: { d: Dashboard }) {
  return (
    <Panel title="Activation intervals" testId="intervals">
      {d.intervals.every((iv) => iv.examples.length === 0) && <Empty>No samples.</Empty>}
      {d.intervals
        .filter((iv) => iv.examples.length > 0)
        .map((iv) => (
          <section key={iv.bin} className="interval" data-testid="interval" data-bin={iv.bin}>
            <h3 className="sub-head">
              Interval {iv.bin + 1}: {iv.low.toFixed(2)} – {iv.high.toFixed(2)}{" "}
              <span className="muted">· {formatPercent(iv.share, 1)} of activations</span>
            </h3>
            <div className="examples">
              {iv.examples.map((ex, i) => (
                <ExampleRow key={i} ex={ex} max={d.max_activation} testId="interval-example" />
              ))}
            </div>
          </section>
        ))}
    </Panel>
  );
}
