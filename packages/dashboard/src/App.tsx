// The shell: the session (or sign-in), the navigation, and the page for the current path.
import { useEffect, useState } from "react";
import { api, ApiError, errorMessage, onUnauthorized, setCsrfToken, type Session } from "./api.ts";
import { Link, match, navigate, usePath } from "./router.tsx";
import { ErrorBox, Loading, Logo } from "./ui.tsx";
import { SignIn } from "./pages/SignIn.tsx";
import { SandboxList } from "./pages/Sandboxes.tsx";
import { SandboxDetail } from "./pages/SandboxDetail.tsx";
import { Templates } from "./pages/Templates.tsx";
import { ApiKeys } from "./pages/ApiKeys.tsx";
import { Usage } from "./pages/Usage.tsx";
import { Audit } from "./pages/Audit.tsx";
import { Hosts } from "./pages/Hosts.tsx";
import { Team } from "./pages/Team.tsx";

const NAV = [
  { to: "/ui/sandboxes", label: "Sandboxes" },
  { to: "/ui/templates", label: "Templates" },
  { to: "/ui/keys", label: "API keys" },
  { to: "/ui/team", label: "Team" },
  { to: "/ui/usage", label: "Usage" },
  { to: "/ui/audit", label: "Audit log" },
  { to: "/ui/hosts", label: "Hosts", admin: true },
];

export function App() {
  const [session, setSession] = useState<Session | null>();
  const [error, setError] = useState<string>();
  const path = usePath();

  const loadSession = () => {
    setError(undefined);
    api<Session>("GET", "/v1/auth/session", undefined, { quiet401: true })
      .then((value) => {
        setCsrfToken(value.csrfToken);
        setSession(value);
      })
      .catch((err: unknown) => {
        if (err instanceof ApiError && (err.status === 401 || err.status === 404)) setSession(null);
        else setError(errorMessage(err));
      });
  };
  useEffect(loadSession, []);
  useEffect(() => onUnauthorized(() => setSession(null)), []);

  if (error) {
    return (
      <div className="signin">
        <ErrorBox error={error} retry={loadSession} />
      </div>
    );
  }
  if (session === undefined) {
    return (
      <div className="signin">
        <Loading what="Connecting" />
      </div>
    );
  }
  if (session === null) {
    return (
      <SignIn
        onSignedIn={(value) => {
          setCsrfToken(value.csrfToken);
          setSession(value);
          if (!path.startsWith("/ui/") || path === "/ui/sign-in") navigate("/ui/sandboxes", { replace: true });
        }}
      />
    );
  }

  const signOut = async () => {
    await api("POST", "/v1/auth/logout").catch(() => undefined);
    setCsrfToken("");
    setSession(null);
  };

  return (
    <div className="shell">
      <aside className="sidebar">
        {/* The aside's background runs the page's whole height; its content stays in view. */}
        <div className="sidebar-inner">
          <div className="brand">
            <Logo />
            WRENN
          </div>
          <nav className="nav" aria-label="Main">
            {NAV.filter((item) => !item.admin || session.team.isAdmin).map((item) => (
              <Link key={item.to} to={item.to} aria-current={path.startsWith(item.to) ? "page" : undefined}>
                {item.label}
              </Link>
            ))}
          </nav>
          <div className="who">
            <span title="Team">{session.team.name}</span>
            {session.user && <span className="email faint">{session.user.email}</span>}
            <button className="small ghost" onClick={() => void signOut()}>
              Sign out
            </button>
          </div>
        </div>
      </aside>
      <main className="main">
        <Page path={path} session={session} />
      </main>
    </div>
  );
}

function Page({ path, session }: { path: string; session: Session }) {
  useEffect(() => {
    if (path === "/" || path === "/ui" || path === "/ui/" || path === "/ui/sign-in") navigate("/ui/sandboxes", { replace: true });
  }, [path]);
  let params: Record<string, string> | null;
  if ((params = match("/ui/sandboxes/:id", path))) return <SandboxDetail id={params.id!} key={params.id} />;
  if (match("/ui/sandboxes", path)) return <SandboxList />;
  if (match("/ui/templates", path)) return <Templates />;
  if (match("/ui/keys", path)) return <ApiKeys />;
  if (match("/ui/team", path)) return <Team session={session} />;
  if (match("/ui/usage", path)) return <Usage />;
  if (match("/ui/audit", path)) return <Audit />;
  if (match("/ui/hosts", path)) return session.team.isAdmin ? <Hosts /> : <ErrorBox error="Hosts are for admins only" />;
  if (path === "/" || path.startsWith("/ui")) return <Loading />;
  return <ErrorBox error={`No page at ${path}`} />;
}
