import { useState, type FormEvent } from "react";
import { useAuth } from "../auth";
import { ErrorBox } from "../components/ui";

export default function SignIn() {
  const { signIn } = useAuth();
  const [key, setKey] = useState("");
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await signIn(key.trim());
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card signin" onSubmit={submit}>
      <h1>fastslow</h1>
      <p className="muted">Sign in with an API key of your tenant (`fastslow tenant create` prints one).</p>
      <label htmlFor="key">API key</label>
      <input
        id="key"
        type="password"
        autoComplete="off"
        value={key}
        onChange={(e) => setKey(e.target.value)}
        style={{ width: "100%" }}
        required
      />
      <ErrorBox error={error} />
      <p>
        <button className="primary" type="submit" disabled={busy || !key.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </p>
    </form>
  );
}
