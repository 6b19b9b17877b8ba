import { useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { api, ok, type ApiError } from "../api/client";
import { useAuth } from "../auth";
import { Badge, ErrorBox, Loading, Section } from "../components/ui";
import { useAsync } from "../hooks";

export default function AgentsPage() {
  const { me } = useAuth();
  const agents = useAsync(() => ok(api.GET("/api/v1/agents")), []);
  const admin = me?.role === "admin";
  return (
    <>
      <Section title="Agents">
        {agents.loading && !agents.data && <Loading />}
        <ErrorBox error={agents.error} />
        {agents.data && agents.data.length === 0 && <p className="muted">No agents yet.</p>}
        {agents.data && agents.data.length > 0 && (
          <div className="table-wrap">
            <table>
              <thead>
                <tr>
                  <th>Agent</th>
                  <th>Live prompt</th>
                  <th>Live adapter</th>
                  <th>Open</th>
                </tr>
              </thead>
              <tbody>
                {agents.data.map((agent) => (
                  <tr key={agent.id}>
                    <td>
                      <strong>{agent.slug}</strong>
                      <div className="muted">{agent.description}</div>
                    </td>
                    <td>
                      <Badge tone="live">v{agent.live_prompt_version}</Badge>
                      {agent.fast_loop.pinned && <Badge tone="warn">pinned</Badge>}
                    </td>
                    <td>{agent.live_adapter_version ? <Badge tone="live">v{agent.live_adapter_version}</Badge> : <span className="muted">base model</span>}</td>
                    <td className="actions">
                      <Link to={`/agents/${agent.slug}/chat`}>Chat</Link>
                      {admin && <Link to={`/agents/${agent.slug}/prompts`}>Prompts</Link>}
                      {admin && <Link to={`/agents/${agent.slug}/adapters`}>Adapters</Link>}
                      {admin && <Link to={`/agents/${agent.slug}/schedule`}>Schedule</Link>}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
      {admin && <CreateAgent onCreated={agents.reload} />}
    </>
  );
}

function CreateAgent({ onCreated }: { onCreated: () => void }) {
  const [slug, setSlug] = useState("");
  const [prompt, setPrompt] = useState("You are a helpful support agent.");
  const [error, setError] = useState<ApiError>();
  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(undefined);
    try {
      await ok(api.POST("/api/v1/agents", { body: { slug, system_prompt: prompt } }));
      setSlug("");
      onCreated();
    } catch (err) {
      setError(err as ApiError);
    }
  }
  return (
    <Section title="New agent">
      <form onSubmit={submit}>
        <label htmlFor="slug">Slug (the `model` of chat requests)</label>
        <input id="slug" value={slug} onChange={(e) => setSlug(e.target.value)} required />
        {error?.fields?.slug && <p className="field-error">{error.fields.slug}</p>}
        <label htmlFor="system-prompt">System prompt</label>
        <textarea id="system-prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} />
        <ErrorBox error={error && !error.fields?.slug ? error : undefined} />
        <p>
          <button className="primary" type="submit">
            Create agent
          </button>
        </p>
      </form>
    </Section>
  );
}
