// A model's one-turn chat format (GET /api/models: `user + instruction + assistant`), so that presets are
// written the way the model reads them: its chat template's text where it has one, else the demo's plain
// `User: ...\nAssistant:`.
import type { ModelInfo } from "./api";

export type ChatFormat = NonNullable<ModelInfo["chat"]>;

export const PLAIN_CHAT: ChatFormat = { template: false, user: "User: ", assistant: "\nAssistant:" };

export const promptIn = (format: ChatFormat, instruction: string) => `${format.user}${instruction}${format.assistant}`;
