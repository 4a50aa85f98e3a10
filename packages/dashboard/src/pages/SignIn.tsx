// Sign-in with an email and password, or with an API key (headless setups): POST /v1/auth/login
// sets the HttpOnly session cookie and answers the session with its CSRF token.
import { useState, type FormEvent } from "react";
import { api, ApiError, errorMessage, type Session } from "../api.ts";
import { ErrorBox, Logo } from "../ui.tsx";

export function SignIn({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  const [mode, setMode] = useState<"password" | "key">("password");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [apiKey, setApiKey] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const body = mode === "password" ? { email: email.trim(), password } : { apiKey: apiKey.trim() };
      onSignedIn(await api<Session>("POST", "/v1/auth/login", body, { quiet401: true }));
    } catch (err) {
      setError(err instanceof ApiError && err.status === 429 ? "Too many attempts; wait a minute and try again" : errorMessage(err));
      setBusy(false);
    }
  };

  return (
    <div className="signin">
      <form className="card stack" onSubmit={(event) => void submit(event)} aria-label="Sign in">
        <div className="brand">
          <Logo size={22} />
          WRENN
        </div>
        <div className="seg" role="group" aria-label="Sign-in method">
          <button type="button" aria-pressed={mode === "password"} onClick={() => setMode("password")}>
            Email
          </button>
          <button type="button" aria-pressed={mode === "key"} onClick={() => setMode("key")}>
            API key
          </button>
        </div>
        {mode === "password" ? (
          <>
            <label className="field">
              Email
              <input name="email" type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.target.value)} autoFocus />
            </label>
            <label className="field">
              Password
              <input name="password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />
            </label>
          </>
        ) : (
          <label className="field">
            API key
            <input name="apiKey" className="mono" autoComplete="off" placeholder="wrn_…" required value={apiKey} onChange={(e) => setApiKey(e.target.value)} autoFocus />
          </label>
        )}
        {error && <ErrorBox error={error} />}
        <button className="primary" type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </div>
  );
}
