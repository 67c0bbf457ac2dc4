// A dashboard's `summary`: enrichment, neighbours, logit effects and neuron weights, as the server
// writes them (untyped in the schema).
import type { Dashboard } from "../api";

export type Pair = [number, number];
export type Logit = [number, string, number];
export interface Summary {
  tokens?: { id: number; token: string; share: number; lift: number }[];
  domains?: { name: string; share: number; lift: number }[];
  neighbours?: Pair[];
  logits?: { top: Logit[]; bottom: Logit[] };
  neurons_reads?: { top: Pair[]; bottom: Pair[] };
  neurons_writes?: { top: Pair[]; bottom: Pair[] };
}

export const summaryOf = (d: Dashboard) => (d.summary ?? {}) as Summary;
