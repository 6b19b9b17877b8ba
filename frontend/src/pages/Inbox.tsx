import { useState } from "react";
import { api, ok } from "../api/client";
import { Badge, ErrorBox, Loading, Section, when } from "../components/ui";
import { useAsync } from "../hooks";

type Filter = { agent: string; rating: "all" | "rated" | "unrated" | "liked" | "disliked"; since: string };

export default function InboxPage() {
  const [filter, setFilter] = useState<Filter>({ agent: "", rating: "all", since: "" });
  const agents = useAsync(() => ok(api.GET("/api/v1/agents")), []);
  const rollouts = useAsync(
    () =>
      ok(
        api.GET("/api/v1/rollouts", {
          params: {
            query: {
              agent: filter.agent || undefined,
              rated: filter.rating === "rated" ? true : filter.rating === "unrated" ? false : undefined,
              min_score: filter.rating === "liked" ? 0.0001 : undefined,
              max_score: filter.rating === "disliked" ? -0.0001 : undefined,
              since: filter.since ? new Date(filter.since).toISOString() : undefined,
              limit: 100,
            },
          },
        }),
      ),
    [filter.agent, filter.rating, filter.since],
  );
  return (
    <Section title="Feedback inbox" actions={<button onClick={rollouts.reload}>Refresh</button>}>
      <div className="row">
        <div>
          <label htmlFor="f-agent">Agent</label>
          <select id="f-agent" value={filter.agent} onChange={(e) => setFilter({ ...filter, agent: e.target.value })}>
            <option value="">All agents</option>
            {agents.data?.map((a) => (
              <option key={a.id} value={a.slug}>
                {a.slug}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label htmlFor="f-rating">Rating</label>
          <select
            id="f-rating"
            value={filter.rating}
            onChange={(e) => setFilter({ ...filter, rating: e.target.value as Filter["rating"] })}
          >
            <option value="all">All answers</option>
            <option value="rated">Rated</option>
            <option value="unrated">Not rated</option>
            <option value="liked">Thumbs up</option>
            <option value="disliked">Thumbs down</option>
          </select>
        </div>
        <div>
          <label htmlFor="f-since">Since</label>
          <input id="f-since" type="date" value={filter.since} onChange={(e) => setFilter({ ...filter, since: e.target.value })} />
        </div>
      </div>
      {rollouts.loading && !rollouts.data && <Loading />}
      <ErrorBox error={rollouts.error} />
      {rollouts.data?.length === 0 && <p className="muted">Nothing matches.</p>}
      {rollouts.data && rollouts.data.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th>When</th>
                <th>Agent</th>
                <th>Question and answer</th>
                <th>Feedback</th>
              </tr>
            </thead>
            <tbody>
              {rollouts.data.map((r) => (
                <tr key={r.id} data-testid="rollout">
                  <td>{when(r.created_at)}</td>
                  <td>
                    {r.agent}
                    <div>
                      <Badge>p v{r.prompt_version}</Badge>
                      <Badge>a {r.adapter_version ? `v${r.adapter_version}` : "none"}</Badge>
                    </div>
                  </td>
                  <td>
                    <div className="text">
                      <strong>Q:</strong> {String(r.messages[r.messages.length - 1]?.content ?? "")}
                    </div>
                    <div className="text">
                      <strong>A:</strong> {r.completion}
                    </div>
                  </td>
                  <td>
                    {r.feedback.length === 0 && <span className="muted">—</span>}
                    {r.feedback.map((f) => (
                      <div key={f.id}>
                        <Badge tone={f.score > 0 ? "live" : f.score < 0 ? "bad" : "plain"}>{f.score > 0 ? "👍" : f.score < 0 ? "👎" : "·"} {f.score}</Badge>
                        {f.comment && <div className="text">“{f.comment}”</div>}
                        {f.correction && (
                          <div className="text muted">
                            Wanted: {f.correction}
                          </div>
                        )}
                      </div>
                    ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}
