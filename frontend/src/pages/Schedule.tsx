import { useEffect, useState, type FormEvent } from "react";
import { useParams } from "react-router-dom";
import { api, ok, type ApiError, type Schemas } from "../api/client";
import { ErrorBox, Loading, Section, when } from "../components/ui";
import { useAsync } from "../hooks";

type Form = {
  mode: "cron" | "interval";
  cron: string;
  timezone: string;
  interval_s: string;
  enabled: boolean;
  min_new_rollouts: string;
  min_new_feedback: string;
  skip_if_unchanged: boolean;
};

const EMPTY: Form = {
  mode: "cron",
  cron: "0 2 * * *",
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  interval_s: "3600",
  enabled: true,
  min_new_rollouts: "0",
  min_new_feedback: "0",
  skip_if_unchanged: true,
};

function fromSchedule(s: Schemas["ScheduleRead"]): Form {
  return {
    mode: s.cron ? "cron" : "interval",
    cron: s.cron ?? EMPTY.cron,
    timezone: s.timezone,
    interval_s: String(s.interval_s ?? EMPTY.interval_s),
    enabled: s.enabled,
    min_new_rollouts: String(s.min_new_rollouts),
    min_new_feedback: String(s.min_new_feedback),
    skip_if_unchanged: s.skip_if_unchanged,
  };
}

export default function SchedulePage() {
  const { slug = "" } = useParams();
  const current = useAsync(async () => {
    const { data, response } = await api.GET("/api/v1/agents/{slug}/schedule", { params: { path: { slug } } });
    if (response.status === 404) return null;
    if (!response.ok || !data) throw new Error(`could not load the schedule (${response.status})`);
    return data;
  }, [slug]);
  const [form, setForm] = useState<Form>(EMPTY);
  const [error, setError] = useState<ApiError>();
  const [saved, setSaved] = useState<Schemas["ScheduleRead"] | null>(null);

  useEffect(() => {
    if (current.data) {
      setForm(fromSchedule(current.data));
      setSaved(current.data);
    }
  }, [current.data]);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(undefined);
    try {
      const body: Schemas["ScheduleWrite"] = {
        enabled: form.enabled,
        timezone: form.timezone,
        cron: form.mode === "cron" ? form.cron : null,
        interval_s: form.mode === "interval" ? Number(form.interval_s) : null,
        min_new_rollouts: Number(form.min_new_rollouts),
        min_new_feedback: Number(form.min_new_feedback),
        skip_if_unchanged: form.skip_if_unchanged,
      };
      setSaved(await ok(api.PUT("/api/v1/agents/{slug}/schedule", { params: { path: { slug } }, body })));
    } catch (err) {
      setError(err as ApiError);
    }
  }

  const field = (name: string) =>
    error?.fields?.[name] ? (
      <p className="field-error" role="alert">
        {error.fields[name]}
      </p>
    ) : null;
  const set = (patch: Partial<Form>) => setForm({ ...form, ...patch });

  return (
    <>
      <Section title={`Training schedule of ${slug}`}>
        {current.loading && !current.data && <Loading />}
        <ErrorBox error={current.error} />
        <form onSubmit={submit}>
          <fieldset style={{ border: 0, padding: 0 }}>
            <legend className="muted">When</legend>
            <label style={{ display: "inline", fontWeight: 400 }}>
              <input type="radio" name="mode" checked={form.mode === "cron"} onChange={() => set({ mode: "cron" })} /> Cron
            </label>{" "}
            <label style={{ display: "inline", fontWeight: 400 }}>
              <input type="radio" name="mode" checked={form.mode === "interval"} onChange={() => set({ mode: "interval" })} /> Interval
            </label>
          </fieldset>
          {form.mode === "cron" ? (
            <div className="row">
              <div>
                <label htmlFor="cron">Cron expression (minute hour day month weekday)</label>
                <input id="cron" value={form.cron} onChange={(e) => set({ cron: e.target.value })} />
                {field("cron")}
              </div>
              <div>
                <label htmlFor="tz">Time zone</label>
                <input id="tz" value={form.timezone} onChange={(e) => set({ timezone: e.target.value })} />
                {field("timezone")}
              </div>
            </div>
          ) : (
            <div>
              <label htmlFor="interval">Every (seconds)</label>
              <input id="interval" type="number" min={1} value={form.interval_s} onChange={(e) => set({ interval_s: e.target.value })} />
              {field("interval_s")}
            </div>
          )}
          <div className="row">
            <div>
              <label htmlFor="min-rollouts">At least this many new rollouts</label>
              <input id="min-rollouts" type="number" min={0} value={form.min_new_rollouts} onChange={(e) => set({ min_new_rollouts: e.target.value })} />
            </div>
            <div>
              <label htmlFor="min-feedback">At least this many new ratings</label>
              <input id="min-feedback" type="number" min={0} value={form.min_new_feedback} onChange={(e) => set({ min_new_feedback: e.target.value })} />
            </div>
          </div>
          <label style={{ fontWeight: 400 }}>
            <input type="checkbox" checked={form.skip_if_unchanged} onChange={(e) => set({ skip_if_unchanged: e.target.checked })} /> Skip when nothing changed
            since the last run
          </label>
          <label style={{ fontWeight: 400 }}>
            <input type="checkbox" checked={form.enabled} onChange={(e) => set({ enabled: e.target.checked })} /> Enabled
          </label>
          {error && Object.keys(error.fields ?? {}).length === 0 && <ErrorBox error={error} />}
          {error?.fields?.request && <ErrorBox error={new Error(error.fields.request)} />}
          <p>
            <button type="submit" className="primary">
              Save schedule
            </button>
          </p>
        </form>
      </Section>
      {saved && (
        <Section title="Preview">
          <p data-testid="schedule-description">{saved.description}{saved.enabled ? "" : " (disabled)"}</p>
          <ol data-testid="next-runs">
            {saved.next_runs.map((run) => (
              <li key={run}>{when(run)}</li>
            ))}
          </ol>
          <p className="muted">
            Last fired: {when(saved.last_fired_at)} {saved.last_outcome && `— ${saved.last_outcome}`}
          </p>
        </Section>
      )}
    </>
  );
}
