import { useEffect, useRef, useState, type FormEvent } from "react";
import { Link, useParams } from "react-router-dom";
import { api, ok, type ApiError, type Schemas } from "../api/client";
import { DiffView } from "../components/DiffView";
import { Badge, ErrorBox, Loading, ProgressBar, Section, num, when } from "../components/ui";
import { useAsync } from "../hooks";

type Version = Schemas["PromptVersionRead"];
type Turn = { role: "user" | "assistant"; content: string };

function turnsText(version: Version): string {
  if (!version.demonstrations.length) return "(none)";
  return version.demonstrations.map((t) => `${String(t.role)}: ${String(t.content)}`).join("\n");
}

export default function PromptsPage() {
  const { slug = "" } = useParams();
  const path = { path: { slug } };
  const versions = useAsync(() => ok(api.GET("/api/v1/agents/{slug}/prompts", { params: path })), [slug]);
  const agent = useAsync(() => ok(api.GET("/api/v1/agents/{slug}", { params: path })), [slug]);
  const [pick, setPick] = useState<{ a?: number; b?: number }>({});
  const [reason, setReason] = useState("");
  const [error, setError] = useState<Error>();

  async function activate(version: number) {
    setError(undefined);
    try {
      await ok(
        api.POST("/api/v1/agents/{slug}/prompts/{version}/activate", {
          params: { path: { slug, version } },
          body: { reason },
        }),
      );
      setReason("");
      versions.reload();
      agent.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  const all = versions.data ?? [];
  const a = all.find((v) => v.version === pick.a);
  const b = all.find((v) => v.version === pick.b);
  return (
    <>
      <FastLoopPanel slug={slug} pinned={agent.data?.fast_loop.pinned ?? false} onChange={() => { agent.reload(); versions.reload(); }} />
      <Section title={`Prompt versions of ${slug}`} actions={<button onClick={versions.reload}>Refresh</button>}>
        {versions.loading && !versions.data && <Loading />}
        <ErrorBox error={versions.error ?? error} />
        <label htmlFor="reason">Reason for an activation or rollback</label>
        <input id="reason" value={reason} onChange={(e) => setReason(e.target.value)} placeholder="e.g. customers preferred the old tone" style={{ width: "100%" }} />
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th>Version</th>
                <th>Source</th>
                <th>Validation</th>
                <th>Note</th>
                <th>Created</th>
                <th>Compare</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {all.map((v) => (
                <tr key={v.id} data-testid={`prompt-version-${v.version}`}>
                  <td>
                    v{v.version} {v.live && <Badge tone="live">live</Badge>}
                    {v.parent_id && <div className="muted">from v{all.find((p) => p.id === v.parent_id)?.version ?? "?"}</div>}
                  </td>
                  <td>
                    <Badge>{v.source}</Badge>
                  </td>
                  <td>
                    {num(v.scores.validation)}
                    {v.scores.live_validation !== undefined && <div className="muted">live then: {num(v.scores.live_validation)}</div>}
                  </td>
                  <td className="text">{v.note}</td>
                  <td>{when(v.created_at)}</td>
                  <td>
                    <label className="muted" style={{ display: "inline" }}>
                      <input type="radio" name="diff-a" checked={pick.a === v.version} onChange={() => setPick({ ...pick, a: v.version })} aria-label={`Compare from v${v.version}`} /> A
                    </label>{" "}
                    <label className="muted" style={{ display: "inline" }}>
                      <input type="radio" name="diff-b" checked={pick.b === v.version} onChange={() => setPick({ ...pick, b: v.version })} aria-label={`Compare to v${v.version}`} /> B
                    </label>
                  </td>
                  <td>
                    {!v.live && (
                      <button type="button" onClick={() => activate(v.version)}>
                        Activate v{v.version}
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Section>
      {a && b && (
        <Section title={`Diff v${a.version} → v${b.version}`}>
          <h3>Instructions</h3>
          <DiffView left={a.instructions} right={b.instructions} leftTitle={`v${a.version}`} rightTitle={`v${b.version}`} />
          <h3>Demonstrations</h3>
          <DiffView left={turnsText(a)} right={turnsText(b)} leftTitle={`v${a.version}`} rightTitle={`v${b.version}`} />
        </Section>
      )}
      {agent.data && versions.data && (
        // Keyed by the live version: the form starts from whatever is live when it changes.
        <EditPrompt key={all.find((v) => v.live)?.id} slug={slug} live={all.find((v) => v.live)} onSaved={versions.reload} />
      )}
    </>
  );
}

function FastLoopPanel({ slug, pinned, onChange }: { slug: string; pinned: boolean; onChange: () => void }) {
  const status = useAsync(
    () => ok(api.GET("/api/v1/agents/{slug}/fast-loop", { params: { path: { slug } } })),
    [slug],
    { pollMs: 2000 },
  );
  const running = status.data?.running_job_id;
  // When a run ends, its versions (and maybe a new live one) are in: show them without a click.
  const wasRunning = useRef(running);
  useEffect(() => {
    if (wasRunning.current && !running) onChange();
    wasRunning.current = running;
  }, [running, onChange]);
  const job = useAsync(
    () => (running ? ok(api.GET("/api/v1/jobs/{job_id}", { params: { path: { job_id: running } } })) : Promise.resolve(null)),
    [running],
  );
  const [error, setError] = useState<Error>();

  async function optimizeNow() {
    setError(undefined);
    try {
      await ok(api.POST("/api/v1/agents/{slug}/optimize", { params: { path: { slug } } }));
      status.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  async function setPinned(value: boolean) {
    setError(undefined);
    try {
      await ok(api.PATCH("/api/v1/agents/{slug}", { params: { path: { slug } }, body: { fast_loop: { pinned: value } as Schemas["FastLoopSettings"] } }));
      onChange();
      status.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  const s = status.data;
  return (
    <Section
      title="Fast loop"
      actions={
        <>
          <button type="button" onClick={() => setPinned(!pinned)}>
            {pinned ? "Unpin prompt" : "Pin prompt"}
          </button>
          <button type="button" className="primary" onClick={optimizeNow} disabled={Boolean(running)}>
            Optimize now
          </button>
        </>
      }
    >
      <ErrorBox error={status.error ?? error} />
      {s && (
        <p data-testid="fast-loop-status">
          {s.pinned
            ? "Pinned: no automatic prompt changes."
            : s.due_reason
              ? `Due now (${s.due_reason}); starts within seconds.`
              : `Runs after ${s.min_new_feedback} new ratings (${s.new_ratings} so far)${s.due_at ? ` or at ${when(s.due_at)}` : ""}.`}
        </p>
      )}
      {running && job.data && (
        <div data-testid="running-optimization">
          <p>
            Optimising now: <Link to={`/jobs/${running}`}>job</Link> ({job.data.status})
          </p>
          <ProgressBar step={job.data.step} total={job.data.total} label="Optimisation progress" />
        </div>
      )}
    </Section>
  );
}

function EditPrompt({ slug, live, onSaved }: { slug: string; live: Version | undefined; onSaved: () => void }) {
  const [instructions, setInstructions] = useState(live?.instructions ?? "");
  const [turns, setTurns] = useState<Turn[]>(
    (live?.demonstrations ?? []).map((t) => ({ role: t.role as Turn["role"], content: String(t.content) })),
  );
  const [note, setNote] = useState("");
  const [error, setError] = useState<ApiError>();
  const [saved, setSaved] = useState<number>();

  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(undefined);
    try {
      const row = await ok(
        api.POST("/api/v1/agents/{slug}/prompts", {
          params: { path: { slug } },
          body: { instructions, demonstrations: turns, note, activate: true },
        }),
      );
      setSaved(row.version);
      onSaved();
    } catch (err) {
      setError(err as ApiError);
    }
  }

  return (
    <Section title="Edit the prompt (creates a new version)">
      <form onSubmit={submit}>
        <label htmlFor="instructions">Instructions</label>
        <textarea id="instructions" value={instructions} onChange={(e) => setInstructions(e.target.value)} />
        <label>Demonstrations (sent as real turns before the conversation)</label>
        {turns.map((turn, i) => (
          <div key={i} className="row">
            <span className="muted" style={{ width: "5rem" }}>
              {turn.role}
            </span>
            <input
              aria-label={`Demonstration ${i + 1} (${turn.role})`}
              value={turn.content}
              onChange={(e) => setTurns(turns.map((t, k) => (k === i ? { ...t, content: e.target.value } : t)))}
              style={{ flex: 1 }}
            />
          </div>
        ))}
        <div className="row">
          <button type="button" onClick={() => setTurns([...turns, { role: "user", content: "" }, { role: "assistant", content: "" }])}>
            Add an exchange
          </button>
          {turns.length > 0 && (
            <button type="button" onClick={() => setTurns(turns.slice(0, -2))}>
              Remove the last exchange
            </button>
          )}
        </div>
        <label htmlFor="note">Note</label>
        <input id="note" value={note} onChange={(e) => setNote(e.target.value)} style={{ width: "100%" }} />
        <ErrorBox error={error} />
        {saved && <p className="muted">Saved as v{saved}, now live.</p>}
        <p>
          <button type="submit" className="primary">
            Save as a new version
          </button>
        </p>
      </form>
    </Section>
  );
}
