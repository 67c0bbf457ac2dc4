// The current model: one choice in the sidebar that every page respects (requests name it as model_id,
// lists are filtered to it). Kept in localStorage so a reload keeps it; `?model=ID` in a link chooses it.
import { createContext, useContext, useState, type ReactNode } from "react";
import type { ModelInfo, ModelsResponse } from "./api";
import { PLAIN_CHAT, type ChatFormat } from "./chat";

const STORAGE_KEY = "loupe.model";

export interface CurrentModel {
  /** The chosen model's id (a registered one); null while none is registered or the list has not arrived. */
  id: string | null;
  model: ModelInfo | undefined;
  models: ModelInfo[];
  /** The server's default model (the world's). */
  defaultId: string | null;
  /** The model's one-turn chat format (the plain one when unknown). */
  chat: ChatFormat;
  choose: (id: string) => void;
}

const NONE: CurrentModel = { id: null, model: undefined, models: [], defaultId: null, chat: PLAIN_CHAT, choose: () => undefined };

const ModelContext = createContext<CurrentModel>(NONE);

function readStored(): string | null {
  const fromUrl = new URLSearchParams(window.location.search).get("model");
  try {
    if (fromUrl) localStorage.setItem(STORAGE_KEY, fromUrl);
    return fromUrl || localStorage.getItem(STORAGE_KEY);
  } catch {
    return fromUrl; // storage disabled: the choice lasts until reload
  }
}

/** Resolves the stored choice against the model list: an unknown id falls back to the server's default. */
export function ModelProvider({ list, children }: { list: ModelsResponse | undefined; children: ReactNode }) {
  const [chosen, setChosen] = useState<string | null>(readStored);
  const models = list?.models ?? [];
  const defaultId = list?.default_id ?? null;
  const model = models.find((m) => m.id === chosen) ?? models.find((m) => m.id === defaultId) ?? models[0];
  const choose = (id: string) => {
    setChosen(id);
    try {
      localStorage.setItem(STORAGE_KEY, id);
    } catch {
      // storage disabled: kept in memory only
    }
  };
  const value: CurrentModel = { id: model?.id ?? null, model, models, defaultId, chat: model?.chat ?? PLAIN_CHAT, choose };
  return <ModelContext.Provider value={value}>{children}</ModelContext.Provider>;
}

export function useCurrentModel(): CurrentModel {
  return useContext(ModelContext);
}

/** The sidebar's picker (shown once at least one model is registered). */
export function ModelPicker() {
  const { id, models, defaultId, choose } = useCurrentModel();
  if (models.length === 0) return null;
  return (
    <label className="field model-picker">
      <span className="field-label">Model</span>
      <select value={id ?? ""} onChange={(e) => choose(e.target.value)} data-testid="global-model-select">
        {models.map((m) => (
          <option key={m.id} value={m.id}>
            {m.name}
            {m.id === defaultId ? " (default)" : ""}
          </option>
        ))}
      </select>
    </label>
  );
}
