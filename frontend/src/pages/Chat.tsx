import { useRef, useState, type FormEvent } from "react";
import { useParams } from "react-router-dom";
import { streamChat, type ServedBy, type Turn } from "../api/chat";
import { api, ok } from "../api/client";
import { Badge, ErrorBox, Section } from "../components/ui";

type Message = Turn & { served?: ServedBy; streaming?: boolean };

export default function ChatPage() {
  const { slug = "" } = useParams();
  const [messages, setMessages] = useState<Message[]>([]);
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const abort = useRef<AbortController | null>(null);

  async function send(event: FormEvent) {
    event.preventDefault();
    const question = draft.trim();
    if (!question || busy) return;
    const history: Turn[] = [
      ...messages.map(({ role, content }) => ({ role, content })),
      { role: "user", content: question },
    ];
    setDraft("");
    setError(undefined);
    setBusy(true);
    setMessages([...history, { role: "assistant", content: "", streaming: true }]);
    const controller = new AbortController();
    abort.current = controller;
    try {
      const served = await streamChat(
        slug,
        history,
        (piece) =>
          setMessages((current) => {
            const last = current[current.length - 1];
            return [...current.slice(0, -1), { ...last, content: last.content + piece }];
          }),
        controller.signal,
      );
      setMessages((current) => {
        const last = current[current.length - 1];
        return [...current.slice(0, -1), { ...last, served, streaming: false }];
      });
    } catch (err) {
      setError(err as Error);
      setMessages(history);
    } finally {
      setBusy(false);
      abort.current = null;
    }
  }

  return (
    <Section
      title={`Chat with ${slug}`}
      actions={
        <button type="button" onClick={() => setMessages([])} disabled={busy || !messages.length}>
          New conversation
        </button>
      }
    >
      <div className="chat" aria-live="polite">
        {messages.length === 0 && <p className="muted">Ask something; rate the answer to teach the agent.</p>}
        {messages.map((message, i) => (
          <div key={i} className={`bubble ${message.role}`} data-testid={`message-${message.role}`}>
            <div className="text">{message.content || (message.streaming ? "…" : "")}</div>
            {message.served && (
              <>
                <div className="muted" data-testid="served-by">
                  <Badge>prompt v{message.served.promptVersion}</Badge>
                  <Badge>adapter {message.served.adapterVersion === "none" ? "none" : `v${message.served.adapterVersion}`}</Badge>
                </div>
                <Feedback completionId={message.served.completionId} />
              </>
            )}
          </div>
        ))}
      </div>
      <ErrorBox error={error} />
      <form className="chat-form" onSubmit={send}>
        <input
          aria-label="Message"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="Type a message"
          disabled={busy}
        />
        {busy ? (
          <button type="button" onClick={() => abort.current?.abort()}>
            Stop
          </button>
        ) : (
          <button className="primary" type="submit" disabled={!draft.trim()}>
            Send
          </button>
        )}
      </form>
    </Section>
  );
}

function Feedback({ completionId }: { completionId: string }) {
  const [score, setScore] = useState<number | null>(null);
  const [comment, setComment] = useState("");
  const [correction, setCorrection] = useState("");
  const [state, setState] = useState<"open" | "sending" | "sent">("open");
  const [error, setError] = useState<Error>();

  async function submit() {
    if (score === null) return;
    setState("sending");
    setError(undefined);
    try {
      await ok(
        api.POST("/v1/feedback", {
          body: {
            completion_id: completionId,
            score,
            comment: comment.trim() || null,
            correction: correction.trim() || null,
          },
          // Retries of this one rating are stored once.
          params: { header: { "idempotency-key": `ui-${completionId}` } },
        }),
      );
      setState("sent");
    } catch (err) {
      setError(err as Error);
      setState("open");
    }
  }

  if (state === "sent") return <p className="muted">Thanks for the feedback.</p>;
  return (
    <div className="rate">
      <button type="button" aria-pressed={score === 1} onClick={() => setScore(1)} aria-label="Thumbs up">
        👍
      </button>
      <button type="button" aria-pressed={score === -1} onClick={() => setScore(-1)} aria-label="Thumbs down">
        👎
      </button>
      {score !== null && (
        <>
          <input aria-label="Comment" placeholder="Comment (optional)" value={comment} onChange={(e) => setComment(e.target.value)} />
          <input
            aria-label="Correction"
            placeholder="The answer you wanted (optional)"
            value={correction}
            onChange={(e) => setCorrection(e.target.value)}
          />
          <button type="button" className="primary" onClick={submit} disabled={state === "sending"}>
            Send feedback
          </button>
        </>
      )}
      <ErrorBox error={error} />
    </div>
  );
}
