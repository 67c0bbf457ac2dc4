// A plotly figure from the backend (plotly's figure JSON: {data, layout}), drawn with plotly.js.
// plotly.js is loaded on first use (a separate chunk), so pages without plots stay light.
import { useEffect, useRef, useState } from "react";

export type Figure = { data: unknown[]; layout?: Record<string, unknown> };

type PlotlyModule = {
  react: (el: HTMLElement, data: unknown[], layout?: unknown, config?: unknown) => Promise<unknown>;
  purge: (el: HTMLElement) => void;
};

let plotly: Promise<PlotlyModule> | null = null;
function loadPlotly(): Promise<PlotlyModule> {
  plotly ??= import("plotly.js-dist-min").then((m) => (m as unknown as { default: PlotlyModule }).default ?? (m as unknown as PlotlyModule));
  return plotly;
}

export function Plot({ figure, height = 280, testId }: { figure: Figure | null | undefined; height?: number; testId?: string }) {
  const ref = useRef<HTMLDivElement>(null);
  const [error, setError] = useState<string | null>(null);
  const [drawn, setDrawn] = useState(false);

  useEffect(() => {
    const el = ref.current;
    if (!el || !figure) return;
    let cancelled = false;
    loadPlotly()
      .then((P) => {
        if (cancelled) return;
        const layout = { height, margin: { l: 48, r: 16, t: 28, b: 40 }, font: { size: 11 }, ...(figure.layout ?? {}) };
        return P.react(el, figure.data, layout, { displaylogo: false, responsive: true }).then(() => {
          if (!cancelled) setDrawn(true);
        });
      })
      .catch((e: unknown) => setError(String(e)));
    return () => {
      cancelled = true;
    };
  }, [figure, height]);

  useEffect(() => {
    const el = ref.current;
    return () => {
      if (el && plotly) void plotly.then((P) => P.purge(el));
    };
  }, []);

  if (!figure) return null;
  return (
    <div className="plot" data-testid={testId} data-drawn={drawn ? "true" : "false"}>
      {error && <p className="error">Could not draw the figure: {error}</p>}
      <div ref={ref} style={{ width: "100%", minHeight: height }} />
    </div>
  );
}
