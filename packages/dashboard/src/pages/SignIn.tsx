// Sign-in with an email and password, or with an API key (headless setups): POST /v1/auth/login
// sets the HttpOnly session cookie and answers the session with its CSRF token.
import { useState, type FormEvent } from "react";
import { api, ApiError, type Session } from "../api.ts";
import { ErrorBox, Logo, Segmented, useAction } from "../ui.tsx";

const SIGN_IN_METHODS = [
  { value: "password", label: "Email" },
  { value: "key", label: "API key" },
] as const;

export function SignIn({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  const [mode, setMode] = useState<"password" | "key">("password");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [apiKey, setApiKey] = useState("");
  const { busy, error, run } = useAction();

  const submit = (event: FormEvent) => {
    event.preventDefault();
    void run(async () => {
      const body = mode === "password" ? { email: email.trim(), password } : { apiKey: apiKey.trim() };
      try {
        onSignedIn(await api<Session>("POST", "/v1/auth/login", body, { quiet401: true }));
      } catch (err) {
        throw err instanceof ApiError && err.status === 429 ? new Error("Too many attempts; wait a minute and try again") : err;
      }
    });
  };

  return (
    <div className="signin">
      <form className="card stack" onSubmit={submit} aria-label="Sign in">
        <div className="brand">
          <Logo size={22} />
          WRENN
        </div>
        <Segmented label="Sign-in method" options={SIGN_IN_METHODS} value={mode} onChange={setMode} />
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
