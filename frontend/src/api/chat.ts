// Streaming chat through the OpenAI-compatible endpoint (server-sent events).
import { explain, getKey, type Schemas } from "./client";

export type Turn = { role: "user" | "assistant"; content: string };

export type ServedBy = {
  completionId: string;
  promptVersion: string;
  adapterVersion: string;
};

/** Parse complete `data:` events out of a buffer; returns them and the unparsed rest. */
export function parseEvents(buffer: string): { events: string[]; rest: string } {
  const events: string[] = [];
  let rest = buffer;
  let cut = rest.indexOf("\n\n");
  while (cut >= 0) {
    const block = rest.slice(0, cut);
    rest = rest.slice(cut + 2);
    for (const line of block.split("\n")) {
      if (line.startsWith("data: ")) events.push(line.slice(6));
    }
    cut = rest.indexOf("\n\n");
  }
  return { events, rest };
}

export async function streamChat(
  model: string,
  messages: Turn[],
  onText: (piece: string) => void,
  signal?: AbortSignal,
): Promise<ServedBy> {
  const body: Schemas["ChatCompletionRequest"] = { model, messages, stream: true };
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${getKey() ?? ""}` },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok || !response.body) {
    throw explain(response.status, await response.json().catch(() => null));
  }
  const served: ServedBy = {
    completionId: response.headers.get("x-fastslow-completion-id") ?? "",
    promptVersion: response.headers.get("x-fastslow-prompt-version") ?? "?",
    adapterVersion: response.headers.get("x-fastslow-adapter-version") ?? "?",
  };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const parsed = parseEvents(buffer);
    buffer = parsed.rest;
    for (const event of parsed.events) {
      if (event === "[DONE]") return served;
      const chunk = JSON.parse(event) as {
        choices?: { delta?: { content?: string } }[];
        error?: { message: string };
      };
      if (chunk.error) throw new Error(chunk.error.message);
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) onText(piece);
    }
  }
  return served;
}
