import { useState } from "react";
import { Link, useParams } from "react-router-dom";
import { api, ok } from "../api/client";
import { Badge, ErrorBox, Loading, Section, num, when } from "../components/ui";
import { useAsync } from "../hooks";

export default function AdaptersPage() {
  const { slug = "" } = useParams();
  const versions = useAsync(
    () => ok(api.GET("/api/v1/agents/{slug}/adapters", { params: { path: { slug } } })),
    [slug],
  );
  const [reason, setReason] = useState("");
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const [started, setStarted] = useState<string>();

  async function activate(version: number | null) {
    setBusy(true);
    setError(undefined);
    try {
      await ok(api.POST("/api/v1/agents/{slug}/adapters/activate", { params: { path: { slug } }, body: { version, reason } }));
      setReason("");
      versions.reload();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  }

  async function train() {
    setError(undefined);
    try {
      const job = await ok(api.POST("/api/v1/agents/{slug}/train", { params: { path: { slug } } }));
      setStarted(job.id);
    } catch (err) {
      setError(err as Error);
    }
  }

  const live = versions.data?.find((v) => v.live);
  return (
    <Section
      title={`Adapters of ${slug}`}
      actions={
        <>
          <button type="button" className="primary" onClick={train}>
            Train now
          </button>
          <button type="button" onClick={() => activate(null)} disabled={busy || !live}>
            Serve the base model
          </button>
        </>
      }
    >
      {started && (
        <p>
          Training started: <Link to={`/jobs/${started}`}>follow the job</Link>.
        </p>
      )}
      {versions.loading && !versions.data && <Loading />}
      <ErrorBox error={versions.error ?? error} />
      <label htmlFor="adapter-reason">Reason for an activation or rollback</label>
      <input id="adapter-reason" value={reason} onChange={(e) => setReason(e.target.value)} style={{ width: "100%" }} />
      {versions.data?.length === 0 && <p className="muted">No adapters yet: the base model serves.</p>}
      {versions.data && versions.data.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th>Version</th>
                <th>Reward (with / without context)</th>
                <th>Live then</th>
                <th>KL to base</th>
                <th>Base skills</th>
                <th>Created</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {versions.data.map((v) => {
                const m = v.metrics as Record<string, number | undefined>;
                return (
                  <tr key={v.id} data-testid={`adapter-version-${v.version}`}>
                    <td>
                      v{v.version} {v.live && <Badge tone="live">live</Badge>}
                      {v.status === "failed" && <Badge tone="bad">failed</Badge>}
                      <div>
                        <Badge>{v.source}</Badge>
                      </div>
                      {v.status_reason && <div className="muted text">{v.status_reason}</div>}
                    </td>
                    <td>
                      {num(m.candidate_reward)} / {num(m.candidate_reward_no_context)}
                    </td>
                    <td>{num(m.live_reward)}</td>
                    <td>{num(m.kl_to_base, 4)}</td>
                    <td>
                      {m.candidate_fact_accuracy !== undefined
                        ? `${num(m.candidate_fact_accuracy, 2)} (base ${num(m.base_fact_accuracy, 2)})`
                        : "—"}
                    </td>
                    <td>
                      {when(v.created_at)}
                      {v.job_id && (
                        <div>
                          <Link to={`/jobs/${v.job_id}`}>training run</Link>
                        </div>
                      )}
                    </td>
                    <td>
                      {!v.live && (
                        <button type="button" disabled={busy} onClick={() => activate(v.version)}>
                          Activate v{v.version}
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}
