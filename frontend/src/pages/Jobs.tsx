import { useState } from "react";
import { Link } from "react-router-dom";
import { api, ok, type Schemas } from "../api/client";
import { Badge, ErrorBox, Loading, ProgressBar, Section, when } from "../components/ui";
import { useAsync } from "../hooks";

const ACTIVE = new Set(["queued", "running"]);

export function statusTone(status: string): "live" | "plain" | "warn" | "bad" {
  return status === "succeeded" ? "live" : status === "failed" ? "bad" : ACTIVE.has(status) ? "warn" : "plain";
}

export default function JobsPage() {
  const [kind, setKind] = useState("");
  const [status, setStatus] = useState("");
  const jobs = useAsync(
    () =>
      ok(
        api.GET("/api/v1/jobs", {
          params: { query: { kind: kind || undefined, status: (status || undefined) as Schemas["JobStatus"] | undefined } },
        }),
      ),
    [kind, status],
    { pollMs: 2000, poll: (list) => list.some((j) => ACTIVE.has(j.status)) },
  );
  return (
    <Section title="Jobs" actions={<button onClick={jobs.reload}>Refresh</button>}>
      <div className="row">
        <div>
          <label htmlFor="job-kind">Kind</label>
          <select id="job-kind" value={kind} onChange={(e) => setKind(e.target.value)}>
            <option value="">All</option>
            <option value="optimize">optimize (fast loop)</option>
            <option value="train">train (slow loop)</option>
            <option value="evaluate">evaluate</option>
          </select>
        </div>
        <div>
          <label htmlFor="job-status">Status</label>
          <select id="job-status" value={status} onChange={(e) => setStatus(e.target.value)}>
            <option value="">All</option>
            {["queued", "running", "succeeded", "failed", "cancelled"].map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
      </div>
      {jobs.loading && !jobs.data && <Loading />}
      <ErrorBox error={jobs.error} />
      {jobs.data?.length === 0 && <p className="muted">No jobs.</p>}
      {jobs.data && jobs.data.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th>Job</th>
                <th>Status</th>
                <th>Progress</th>
                <th>Created</th>
              </tr>
            </thead>
            <tbody>
              {jobs.data.map((job) => (
                <tr key={job.id}>
                  <td>
                    <Link to={`/jobs/${job.id}`}>{job.kind}</Link>
                    <div className="muted">{String(job.params.trigger ?? "")}</div>
                  </td>
                  <td>
                    <Badge tone={statusTone(job.status)}>{job.status}</Badge>
                  </td>
                  <td style={{ minWidth: "10rem" }}>
                    <ProgressBar step={job.step} total={job.total} label={`Progress of ${job.kind}`} />
                  </td>
                  <td>{when(job.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}
