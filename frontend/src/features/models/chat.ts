// A model's one-turn chat format (GET /api/models: `user + instruction + assistant`), so that presets are
// written the way the model reads them: its chat template's text where it has one, else the demo's plain
// `User: ...\nAssistant:`.
import { useEffect, useState } from "react";
import { modelsApi, type ModelInfo } from "./api";

export type ChatFormat = NonNullable<ModelInfo["chat"]>;

export const PLAIN_CHAT: ChatFormat = { template: false, user: "User: ", assistant: "\nAssistant:" };

export const promptIn = (format: ChatFormat, instruction: string) => `${format.user}${instruction}${format.assistant}`;

/** Each registered model's chat format by id, and the default model's id; empty until the list arrives. */
export function useChatFormats(): { formats: Record<string, ChatFormat>; defaultId: string | null } {
  const [state, setState] = useState<{ formats: Record<string, ChatFormat>; defaultId: string | null }>({ formats: {}, defaultId: null });
  useEffect(() => {
    const c = new AbortController();
    modelsApi
      .models(c.signal)
      .then((m) => {
        const formats: Record<string, ChatFormat> = {};
        for (const x of m.models) if (x.chat) formats[x.id] = x.chat;
        setState({ formats, defaultId: m.default_id ?? null });
      })
      .catch(() => undefined); // presets stay in the plain format
    return () => c.abort();
  }, []);
  return state;
}
