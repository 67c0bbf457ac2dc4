// Text shown token by token, each token shaded by an activation (Anthropic's and Neuronpedia's
// feature browsers): background intensity ~ activation / max, a hover tip with the exact value.
import type { CSSProperties, ReactNode } from "react";

/** A token made visible: spaces as-is, newlines and tabs as symbols, empty as ∅. */
export function showToken(tok: string): string {
  return tok.replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍") || "∅";
}

/** A token made visible with its spaces shown as "·" too (for token chips, where spaces vanish). */
export function showSpacedToken(tok: string): string {
  return showToken(tok.replace(/ /g, "·"));
}

/** The shade of an activation: 0 for none, up to 1 at `max`. */
export function shade(activation: number, max: number): number {
  if (!(activation > 0) || !(max > 0)) return 0;
  return Math.min(1, activation / max);
}

/** Inline style for a shaded token (orange, as both reference browsers). */
export function shadeStyle(activation: number, max: number): CSSProperties | undefined {
  const a = shade(activation, max);
  return a > 0 ? { backgroundColor: `rgba(255, 138, 20, ${(0.12 + 0.78 * a).toFixed(3)})` } : undefined;
}

export function tip(token: string, activation: number): string {
  return `${JSON.stringify(token)}  ${activation.toFixed(3)}`;
}

export interface Tok {
  token: string;
  activation: number;
}

/** One example's tokens. `center` (if any) is outlined as the example's own token. */
export function TokenText({
  tokens,
  max,
  center,
  testId = "example-tokens",
  after,
}: {
  tokens: Tok[];
  max: number;
  center?: number;
  testId?: string;
  after?: ReactNode;
}) {
  return (
    <span className="tok-text" data-testid={testId}>
      {tokens.map((t, i) => {
        const active = t.activation > 0;
        return (
          <span
            key={i}
            className={`tok${i === center ? " tok-center" : ""}${active ? " tok-active" : ""}`}
            style={shadeStyle(t.activation, max)}
            data-tip={tip(t.token, t.activation)}
            data-activation={t.activation}
            data-testid={active ? "tok-active" : "tok"}
          >
            {showToken(t.token)}
          </span>
        );
      })}
      {after}
    </span>
  );
}
