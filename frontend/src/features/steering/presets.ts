// Steering presets: named intervention settings, kept in this browser's localStorage.
import { useState } from "react";
import type { SteerForm, SteerSettings } from "./form";

const PRESET_KEY = "loupe.steer.presets";

export type Preset = { name: string; form: SteerSettings };

function loadPresets(): Preset[] {
  try {
    const raw = window.localStorage.getItem(PRESET_KEY);
    return raw ? (JSON.parse(raw) as Preset[]) : [];
  } catch {
    return [];
  }
}

/** The default name of a preset: its method, and alpha where the method has one. */
function presetName(form: SteerForm): string {
  return `${form.method} ${form.method === "addition" || form.method === "ace" ? `α=${form.alpha}` : ""}`.trim();
}

export function useSteerPresets() {
  const [presets, setPresets] = useState<Preset[]>(loadPresets);
  /** Save the form's settings under `name` (or a default name), replacing a preset of that name. */
  const save = (name: string, form: SteerForm) => {
    const key = name.trim() || presetName(form);
    const { prompt: _prompt, maxNewTokens: _maxNewTokens, ...settings } = form;
    const next = [...presets.filter((p) => p.name !== key), { name: key, form: settings }];
    setPresets(next);
    window.localStorage.setItem(PRESET_KEY, JSON.stringify(next));
  };
  const find = (name: string) => presets.find((p) => p.name === name);
  return { presets, save, find };
}
