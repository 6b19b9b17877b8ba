import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router-dom";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parseEvents } from "./api/chat";
import { explain } from "./api/client";
import { DiffView, lineDiff } from "./components/DiffView";
import InboxPage from "./pages/Inbox";
import SchedulePage from "./pages/Schedule";

function jsonResponse(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

afterEach(() => vi.restoreAllMocks());

describe("streaming", () => {
  it("parses complete events and keeps the rest", () => {
    const { events, rest } = parseEvents('data: {"a":1}\n\ndata: [DONE]\n\ndata: {"b"');
    expect(events).toEqual(['{"a":1}', "[DONE]"]);
    expect(rest).toBe('data: {"b"');
  });
});

describe("errors", () => {
  it("maps validation errors to fields", () => {
    const error = explain(422, {
      detail: [{ loc: ["body", "cron"], msg: "Value error, invalid cron expression '61 * * * *'" }],
    });
    expect(error.fields.cron).toBe("invalid cron expression '61 * * * *'");
  });
  it("reads the OpenAI error shape", () => {
    const error = explain(404, { error: { message: "agent 'x' not found", param: "model" } });
    expect(error.message).toBe("agent 'x' not found");
    expect(error.fields.model).toBe("agent 'x' not found");
  });
});

describe("diff", () => {
  it("marks lines that differ on each side", () => {
    const diff = lineDiff(["a", "b", "c"], ["a", "x", "c", "d"]);
    expect(diff.left.map(([, changed]) => changed)).toEqual([false, true, false]);
    expect(diff.right.map(([, changed]) => changed)).toEqual([false, true, false, true]);
  });
  it("shows markup as text, never as HTML", () => {
    const { container } = render(
      <DiffView left={"<script>alert(1)</script>"} right={"<b>bold</b>"} leftTitle="v1" rightTitle="v2" />,
    );
    expect(container.querySelector("script")).toBeNull();
    expect(container.querySelector("b")).toBeNull();
    expect(screen.getByText(/<script>alert\(1\)<\/script>/)).toBeInTheDocument();
  });
});

describe("feedback inbox", () => {
  it("renders user-written text as text", async () => {
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input) => {
      const url = input instanceof Request ? input.url : String(input);
      if (url.includes("/api/v1/agents")) return jsonResponse(200, []);
      return jsonResponse(200, [
        {
          id: "chatcmpl-1",
          agent: "support",
          prompt_version: 1,
          adapter_version: null,
          messages: [{ role: "user", content: "<img src=x onerror=alert(1)>" }],
          completion: "<script>steal()</script>",
          sampling: {},
          prompt_tokens: 1,
          completion_tokens: 1,
          latency_ms: 1,
          finish_reason: "stop",
          stream: false,
          created_at: "2026-11-29T10:00:00Z",
          feedback: [
            {
              id: "f1",
              completion_id: "chatcmpl-1",
              score: -1,
              comment: "<b>too long</b>",
              correction: null,
              created_at: "2026-11-29T10:01:00Z",
              object: "feedback",
            },
          ],
        },
      ]);
    });
    const { container } = render(
      <MemoryRouter>
        <InboxPage />
      </MemoryRouter>,
    );
    expect(await screen.findByText(/steal\(\)/)).toBeInTheDocument();
    expect(container.querySelector("script, img, b")).toBeNull();
    expect(screen.getByText(/<b>too long<\/b>/)).toBeInTheDocument();
  });
});

describe("schedule form", () => {
  it("shows the server's validation error next to the field", async () => {
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input) => {
      const request = input as Request;
      if (request.method === "GET") return jsonResponse(404, { detail: "agent 'support' has no schedule" });
      return jsonResponse(422, {
        detail: [{ loc: ["body", "cron"], msg: "Value error, invalid cron expression '61 * * * *'" }],
      });
    });
    render(
      <MemoryRouter initialEntries={["/agents/support/schedule"]}>
        <Routes>
          <Route path="/agents/:slug/schedule" element={<SchedulePage />} />
        </Routes>
      </MemoryRouter>,
    );
    const cron = await screen.findByLabelText(/Cron expression/);
    await userEvent.clear(cron);
    await userEvent.type(cron, "61 * * * *");
    await userEvent.click(screen.getByRole("button", { name: "Save schedule" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("invalid cron expression '61 * * * *'");
  });
});
