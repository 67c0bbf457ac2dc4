// Event handlers the forms share.
import type { FormEvent, KeyboardEvent } from "react";

/** A form's onSubmit: run `action` instead of the browser's submit. */
export function submitTo(action: () => void) {
  return (e: FormEvent) => {
    e.preventDefault();
    action();
  };
}

/** An onKeyDown that runs `action` on Ctrl+Enter (Cmd+Enter on a Mac). */
export function onCtrlEnter(action: () => void) {
  return (e: KeyboardEvent) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      action();
    }
  };
}
