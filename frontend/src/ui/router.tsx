// A tiny path router (history API). FastAPI serves index.html for any
// non-/api path, so deep links like /generate work on reload.
import { useSyncExternalStore, type AnchorHTMLAttributes, type MouseEvent } from "react";

const listeners = new Set<() => void>();

function notify() {
  for (const l of listeners) l();
}

if (typeof window !== "undefined") window.addEventListener("popstate", notify);

function subscribe(cb: () => void) {
  listeners.add(cb);
  return () => {
    listeners.delete(cb);
  };
}

export function normalizePath(p: string): string {
  const trimmed = p.replace(/\/+$/, "");
  return trimmed === "" ? "/" : trimmed;
}

function currentPath() {
  return normalizePath(window.location.pathname);
}

export function usePath(): string {
  return useSyncExternalStore(subscribe, currentPath, () => "/");
}

function currentSearch() {
  return window.location.search;
}

/** The query string of the current URL ("" or "?a=b"); re-renders when it changes. */
export function useSearch(): string {
  return useSyncExternalStore(subscribe, currentSearch, () => "");
}

/** Change the URL without a new history entry (for state typed into a box). */
export function replaceUrl(to: string) {
  window.history.replaceState(null, "", to);
  notify();
}

export function navigate(to: string) {
  if (normalizePath(to) === currentPath() && !to.includes("?") && !to.includes("#")) return;
  window.history.pushState(null, "", to);
  window.scrollTo(0, 0);
  notify();
}

type LinkProps = AnchorHTMLAttributes<HTMLAnchorElement> & { to: string };

export function Link({ to, onClick, ...rest }: LinkProps) {
  const handle = (e: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
  return <a href={to} onClick={handle} {...rest} />;
}
