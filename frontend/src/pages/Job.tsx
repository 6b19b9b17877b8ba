import { useState } from "react";
import { useNavigate, useParams } from "react-router-dom";
import { CartesianGrid, Legend, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { api, ok } from "../api/client";
import { Badge, ErrorBox, Loading, ProgressBar, Section, when } from "../components/ui";
import { useAsync } from "../hooks";
import { statusTone } from "./Jobs";

type Curves = Record<string, (number | null)[]>;

export default function JobPage() {
  const { id = "" } = useParams();
  const navigate = useNavigate();
  const job = useAsync(
    () => ok(api.GET("/api/v1/jobs/{job_id}", { params: { path: { job_id: id } } })),
    [id],
    { pollMs: 1000, poll: (j) => j.status === "queued" || j.status === "running" },
  );
  const [error, setError] = useState<Error>();

  async function cancel() {
    setError(undefined);
    try {
      await ok(api.POST("/api/v1/jobs/{job_id}/cancel", { params: { path: { job_id: id } } }));
      job.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  async function retry() {
    setError(undefined);
    try {
      const again = await ok(api.POST("/api/v1/jobs/{job_id}/retry", { params: { path: { job_id: id } } }));
      navigate(`/jobs/${again.id}`);
    } catch (err) {
      setError(err as Error);
    }
  }

  if (job.loading && !job.data) return <Loading />;
  const j = job.data;
  if (!j) return <ErrorBox error={job.error} />;
  const active = j.status === "queued" || j.status === "running";
  const metrics = j.metrics as Record<string, unknown>;
  const curves = (metrics.curves ?? {}) as Curves;
  const scalars = Object.entries(metrics).filter(([, v]) => typeof v === "number" || typeof v === "string");
  return (
    <>
      <Section
        title={`Job: ${j.kind}`}
        actions={
          <>
            {active && (
              <button type="button" className="danger" onClick={cancel} disabled={j.cancel_requested}>
                {j.cancel_requested ? "Cancelling…" : "Cancel"}
              </button>
            )}
            {(j.status === "failed" || j.status === "cancelled") && (
              <button type="button" onClick={retry}>
                Retry
              </button>
            )}
          </>
        }
      >
        <ErrorBox error={error ?? job.error} />
        <p>
          <Badge tone={statusTone(j.status)}>{j.status}</Badge> created {when(j.created_at)}, started {when(j.started_at)}, finished{" "}
          {when(j.finished_at)} · attempts {j.attempts}
        </p>
        <ProgressBar step={j.step} total={j.total} label="Job progress" />
        {j.error && <p className="error">{j.error}</p>}
        {typeof j.result.reason === "string" && <p data-testid="job-outcome">Outcome: {String(j.result.outcome)} — {j.result.reason}</p>}
      </Section>
      {curves.reward && curves.reward.length > 0 && <CurvesChart curves={curves} />}
      {scalars.length > 0 && (
        <Section title="Metrics">
          <table>
            <tbody>
              {scalars.map(([name, value]) => (
                <tr key={name}>
                  <th>{name}</th>
                  <td>{typeof value === "number" ? value.toFixed(4) : String(value)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </Section>
      )}
      <Section title="Log">
        <pre data-testid="log-tail">{j.log_tail || "(empty)"}</pre>
      </Section>
    </>
  );
}

function CurvesChart({ curves }: { curves: Curves }) {
  const steps = curves.reward.length;
  const data = Array.from({ length: steps }, (_, i) => ({
    step: i + 1,
    reward: curves.reward[i],
    kl: curves.kl?.[i] ?? null,
  }));
  return (
    <Section title="Reward and KL over steps">
      <div style={{ width: "100%", height: 260 }} data-testid="curves">
        <ResponsiveContainer>
          <LineChart data={data}>
            <CartesianGrid strokeDasharray="3 3" />
            <XAxis dataKey="step" />
            <YAxis yAxisId="reward" domain={[0, 1]} />
            <YAxis yAxisId="kl" orientation="right" />
            <Tooltip />
            <Legend />
            <Line yAxisId="reward" type="monotone" dataKey="reward" stroke="#2556c4" isAnimationActive={false} connectNulls />
            <Line yAxisId="kl" type="monotone" dataKey="kl" stroke="#c23b3b" isAnimationActive={false} connectNulls />
          </LineChart>
        </ResponsiveContainer>
      </div>
    </Section>
  );
}
