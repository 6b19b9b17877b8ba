// The typed API client: request and response shapes come from the server's OpenAPI schema
// (src/api/openapi.json, exported by `fastslow openapi`; `npm run gen` writes schema.d.ts).
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];

const STORAGE_KEY = "fastslow.api-key";

// The key lives in sessionStorage: gone when the tab closes, never in a URL or a log.
export function getKey(): string | null {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function setKey(key: string | null): void {
  if (key) sessionStorage.setItem(STORAGE_KEY, key);
  else sessionStorage.removeItem(STORAGE_KEY);
}

// `fetch` is looked up at call time (tests replace it).
export const api = createClient<paths>({
  baseUrl: window.location.origin,
  fetch: (request) => globalThis.fetch(request),
});

api.use({
  onRequest({ request }) {
    const key = getKey();
    if (key) request.headers.set("Authorization", `Bearer ${key}`);
    return request;
  },
});

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly fields: Record<string, string> = {},
  ) {
    super(message);
  }
}

type ErrorBody = {
  detail?: unknown;
  error?: { message?: string; param?: string | null };
};

/** The readable message of an error body, and messages per field for forms. */
export function explain(status: number, body: unknown): ApiError {
  const error = (body ?? {}) as ErrorBody;
  if (error.error?.message) {
    const fields = error.error.param ? { [error.error.param]: error.error.message } : {};
    return new ApiError(error.error.message, status, fields);
  }
  if (Array.isArray(error.detail)) {
    const fields: Record<string, string> = {};
    for (const item of error.detail as { loc?: unknown[]; msg?: string }[]) {
      const name = (item.loc ?? []).filter((p) => p !== "body").join(".") || "request";
      fields[name] = (item.msg ?? "invalid").replace(/^Value error, /, "");
    }
    return new ApiError(Object.values(fields).join("; "), status, fields);
  }
  if (typeof error.detail === "string") return new ApiError(error.detail, status);
  return new ApiError(`request failed (${status})`, status);
}

/** Unwrap an openapi-fetch result: the data, or an ApiError with the server's message. */
export async function ok<T>(
  pending: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await pending;
  if (!response.ok || error !== undefined) throw explain(response.status, error);
  return data as T;
}
