import { useState, type FormEvent } from "react";
import { api, ok, type Schemas } from "../api/client";
import { Badge, ErrorBox, Loading, Section, when } from "../components/ui";
import { useAsync } from "../hooks";

export default function KeysPage() {
  const keys = useAsync(() => ok(api.GET("/api/v1/keys")), []);
  const [role, setRole] = useState<Schemas["Role"]>("member");
  const [name, setName] = useState("");
  const [created, setCreated] = useState<Schemas["ApiKeyCreated"]>();
  const [error, setError] = useState<Error>();

  async function create(event: FormEvent) {
    event.preventDefault();
    setError(undefined);
    try {
      setCreated(await ok(api.POST("/api/v1/keys", { body: { role, name } })));
      setName("");
      keys.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  async function revoke(id: string) {
    setError(undefined);
    try {
      await ok(api.DELETE("/api/v1/keys/{key_id}", { params: { path: { key_id: id } } }));
      keys.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  return (
    <>
      <Section title="New API key">
        <form onSubmit={create} className="row">
          <div>
            <label htmlFor="key-name">Name</label>
            <input id="key-name" value={name} onChange={(e) => setName(e.target.value)} />
          </div>
          <div>
            <label htmlFor="key-role">Role</label>
            <select id="key-role" value={role} onChange={(e) => setRole(e.target.value as Schemas["Role"])}>
              <option value="member">member (chat and feedback)</option>
              <option value="admin">admin (everything)</option>
            </select>
          </div>
          <button type="submit" className="primary">
            Create key
          </button>
        </form>
        {created && (
          <div className="card" role="status">
            <p>
              <strong>Copy this key now; it is not shown again:</strong>
            </p>
            <pre data-testid="new-key">{created.key}</pre>
            <button type="button" onClick={() => void navigator.clipboard?.writeText(created.key)}>
              Copy
            </button>{" "}
            <button type="button" onClick={() => setCreated(undefined)}>
              Done
            </button>
          </div>
        )}
        <ErrorBox error={error} />
      </Section>
      <Section title="API keys">
        {keys.loading && !keys.data && <Loading />}
        <ErrorBox error={keys.error} />
        {keys.data && (
          <div className="table-wrap">
            <table>
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Role</th>
                  <th>Key</th>
                  <th>Created</th>
                  <th>Last used</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {keys.data.map((key) => (
                  <tr key={key.id} data-testid="key-row">
                    <td>{key.name || <span className="muted">(unnamed)</span>}</td>
                    <td>{key.role}</td>
                    <td>
                      <code>fsk_{key.lookup}_…</code>
                    </td>
                    <td>{when(key.created_at)}</td>
                    <td>{when(key.last_used_at)}</td>
                    <td>
                      {key.revoked_at ? (
                        <Badge tone="bad">revoked</Badge>
                      ) : (
                        <button type="button" className="danger" onClick={() => revoke(key.id)}>
                          Revoke
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
    </>
  );
}
