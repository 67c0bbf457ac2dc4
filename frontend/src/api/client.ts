// A small typed fetch client for the Loupe API.
//
// Types come from src/api/schema.d.ts, generated from openapi.json
// (`npm run gen:api`). Request/response types are looked up by path and
// method, so they follow the contract even if schema component names change.
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];

type JsonContent<T> = T extends { content: { "application/json": infer B } } ? B : never;
type Method = "get" | "post" | "put" | "patch" | "delete";

/** The JSON body of the 200 response of `method path`. */
export type ResponseOf<P extends keyof paths, M extends Method> = paths[P][M] extends {
  responses: { 200: infer R };
}
  ? JsonContent<R>
  : never;

/** The JSON request body of `method path`. */
export type RequestOf<P extends keyof paths, M extends Method> = paths[P][M] extends {
  requestBody?: infer RB;
}
  ? JsonContent<NonNullable<RB>>
  : never;

/** `?a=1&b=x` from an object; undefined, null and "" values are left out. */
export function queryString(params: object): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** An HTTP or network failure, with a message a person can act on. */
export class ApiError extends Error {
  readonly status: number; // 0 for network failures
  readonly detail: string;
  readonly errors: unknown[];
  readonly body: unknown;

  constructor(status: number, detail: string, errors: unknown[] = [], body: unknown = null) {
    super(ApiError.compose(detail, errors));
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.errors = errors;
    this.body = body;
  }

  private static compose(detail: string, errors: unknown[]): string {
    const lines = errors.map(formatValidationError).filter((l) => l && !detail.includes(l));
    return lines.length ? `${detail}\n${lines.map((l) => `• ${l}`).join("\n")}` : detail;
  }
}

function formatLoc(loc: unknown): string {
  if (!Array.isArray(loc)) return "";
  const parts = loc.filter((p) => p !== "body");
  return parts.map(String).join(".");
}

/** One pydantic/FastAPI validation error -> "field: message". */
export function formatValidationError(e: unknown): string {
  if (typeof e === "string") return e;
  if (e && typeof e === "object") {
    const o = e as Record<string, unknown>;
    const msg = typeof o.msg === "string" ? o.msg : typeof o.message === "string" ? o.message : "";
    const loc = formatLoc(o.loc) || (typeof o.field === "string" ? o.field : "");
    if (msg) return loc ? `${loc}: ${msg}` : msg;
    return JSON.stringify(e);
  }
  return String(e);
}

/** Turn an error response body into an ApiError. Handles the backend's
 * `{"detail": str, "errors"?: [...]}` and FastAPI's default `{"detail": [...]}`. */
export function errorFromBody(status: number, statusText: string, body: unknown, raw: string): ApiError {
  const fallback = `HTTP ${status}${statusText ? ` ${statusText}` : ""}`;
  if (body && typeof body === "object") {
    const o = body as Record<string, unknown>;
    const errors = Array.isArray(o.errors) ? o.errors : [];
    if (typeof o.detail === "string" && o.detail.trim()) {
      return new ApiError(status, o.detail, errors, body);
    }
    if (Array.isArray(o.detail)) {
      const lines = o.detail.map(formatValidationError);
      const detail = lines.length === 1 ? `Invalid request: ${lines[0]}` : "Invalid request";
      return new ApiError(status, detail, lines.length === 1 ? [] : o.detail, body);
    }
    if (typeof o.message === "string") return new ApiError(status, o.message, errors, body);
  }
  const text = raw.trim().replace(/\s+/g, " ").slice(0, 300);
  return new ApiError(status, text && !text.startsWith("<") ? `${fallback}: ${text}` : fallback, [], body);
}

// The API token (LOUPE_TOKEN), asked for once when the server answers 401 and kept for this tab.
const TOKEN_KEY = "loupe.token";

export function storedToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Asks the person for the token (`rejected`: the last one given was refused); resolves with it. */
export type TokenAsker = (rejected: boolean) => Promise<string>;
let asker: TokenAsker | null = null;
let asking: Promise<string> | null = null;

/** The shell registers the dialog that asks for the token; requests answered 401 wait on it. */
export function setTokenAsker(fn: TokenAsker | null): void {
  asker = fn;
}

function askToken(rejected: boolean, ask: TokenAsker): Promise<string> {
  // one dialog for all the requests that were refused together
  asking ??= ask(rejected).finally(() => {
    asking = null;
  });
  return asking;
}

/** `fetch` with the tab's token, asking for one when the server answers 401; a network failure
 * becomes an `ApiError` (an abort is passed on as it is). */
export async function send(path: string, init: RequestInit): Promise<Response> {
  for (;;) {
    const token = storedToken();
    const headers = new Headers(init.headers);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    let res: Response;
    try {
      res = await fetch(path, { ...init, headers });
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") throw err;
      throw new ApiError(0, `Cannot reach the Loupe server (${err instanceof Error ? err.message : String(err)}). Is \`loupe serve\` running?`);
    }
    if (res.status !== 401 || !asker) return res;
    if (storedToken() === token) {
      const given = await askToken(token !== null, asker);
      try {
        sessionStorage.setItem(TOKEN_KEY, given);
      } catch {
        return res; // no storage in this tab: nothing to retry with
      }
    }
    init.signal?.throwIfAborted();
  }
}

function parseJson(raw: string): unknown {
  if (!raw) return null;
  try {
    return JSON.parse(raw);
  } catch {
    return null;
  }
}

/** The `ApiError` of a non-2xx response, from its body. */
export async function errorOfResponse(res: Response): Promise<ApiError> {
  const raw = await res.text();
  return errorFromBody(res.status, res.statusText, parseJson(raw), raw);
}

/** One JSON request; non-2xx answers and network failures become `ApiError`s. */
export async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const res = await send(path, {
    method,
    headers: body === undefined ? { Accept: "application/json" } : { Accept: "application/json", "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!res.ok) throw await errorOfResponse(res);
  const raw = await res.text();
  const parsed = parseJson(raw);
  if (parsed === null && raw) {
    throw new ApiError(res.status, `Expected JSON from ${path} but got something else (is the API mounted under /api?)`);
  }
  return parsed as T;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
