// The team's dashboard users: add one (a new email with the password it will sign in with, an
// existing account as is), remove one after confirmation (the API keeps the last owner), and the
// signed-in user's own password.
import { useState } from "react";
import { api, ApiError, type Member, type Session, type TeamRole } from "../api.ts";
import { ago, AsyncTable, dateTime, FormDialog, PageHead, useConfirm, useLoad, useNow } from "../ui.tsx";

/** The API's minimum for a new password. */
export const PASSWORD_MIN_LENGTH = 12;

export function Team({ session }: { session: Session }) {
  const confirm = useConfirm();
  const now = useNow(10_000);
  const [dialog, setDialog] = useState<"add" | "password">();
  const [notice, setNotice] = useState<string>();
  const members = useLoad((signal) => api<Member[]>("GET", "/v1/teams/current/members", undefined, { signal }), []);
  const me = session.user ? members.data?.find((m) => m.userId === session.user!.id) : undefined;
  // Owners and admins manage the members, and so does anyone signed in with one of the team's keys.
  const canManage = members.data !== undefined && (!session.user || me?.role === "owner" || me?.role === "admin");
  const roles: TeamRole[] = !session.user || me?.role === "owner" ? ["member", "admin", "owner"] : ["member", "admin"];

  const remove = (member: Member) =>
    confirm.ask({
      title: "Remove member",
      body: (
        <p>
          Remove <strong>{member.email}</strong> from {session.team.name}? Their dashboard sessions for this team end at once.
        </p>
      ),
      action: "Remove",
      danger: true,
      run: async () => {
        await api("DELETE", `/v1/teams/current/members/${member.userId}`);
        members.reload();
      },
    });

  return (
    <>
      <PageHead title="Team">
        <span className="dim">{session.team.name}</span>
        <span className="spacer" />
        {canManage && (
          <button className="primary" onClick={() => setDialog("add")}>
            + Add member
          </button>
        )}
      </PageHead>
      <div className="section">
        <AsyncTable
          state={members}
          what="Loading members"
          label="Members"
          empty="No dashboard users yet: add one to let them sign in with an email and a password."
          head={
            <>
              <th>Email</th>
              <th>Role</th>
              <th>Since</th>
              <th />
            </>
          }
          row={(m: Member) => (
            <tr key={m.userId} data-member={m.email}>
              <td className="mono">
                {m.email}
                {m.userId === session.user?.id && <span className="faint"> (you)</span>}
              </td>
              <td>
                <span className="badge plain">{m.role}</span>
              </td>
              <td className="dim nowrap" title={dateTime(m.createdAt)}>
                {ago(m.createdAt, now)}
              </td>
              <td className="actions">
                {canManage && (
                  <button className="small danger" onClick={() => remove(m)} aria-label={`Remove ${m.email}`}>
                    Remove
                  </button>
                )}
              </td>
            </tr>
          )}
        />
      </div>
      <div className="section">
        <h2>Your account</h2>
        {session.user ? (
          <div className="row">
            <span className="mono">{session.user.email}</span>
            {me && <span className="badge plain">{me.role}</span>}
            <span style={{ flex: 1 }} />
            <button onClick={() => setDialog("password")}>Change my password</button>
          </div>
        ) : (
          <div className="dim">Signed in with an API key: there is no password to change. Sign in with an email and password to change yours.</div>
        )}
        {notice && (
          <div className="notice" role="status">
            {notice}
          </div>
        )}
      </div>
      {dialog === "add" && <AddMemberDialog roles={roles} onClose={() => setDialog(undefined)} onAdded={members.reload} />}
      {dialog === "password" && (
        <ChangePasswordDialog onClose={() => setDialog(undefined)} onChanged={() => setNotice("Password changed. Your other sessions were signed out.")} />
      )}
      {confirm.element}
    </>
  );
}

function AddMemberDialog({ roles, onClose, onAdded }: { roles: TeamRole[]; onClose: () => void; onAdded: () => void }) {
  const [email, setEmail] = useState("");
  const [role, setRole] = useState<TeamRole>("member");
  const [password, setPassword] = useState("");
  const [needsPassword, setNeedsPassword] = useState(false);
  const add = async () => {
    try {
      await api("POST", "/v1/teams/current/members", { email: email.trim(), role, ...(password ? { password } : {}) });
    } catch (err) {
      // Only the API knows whether the email has an account: a new one needs a password (400
      // without one); an existing one keeps its own (409 with one).
      if (err instanceof ApiError && err.status === 400 && !password) setNeedsPassword(true);
      if (err instanceof ApiError && err.status === 409 && password) {
        setNeedsPassword(false);
        setPassword("");
      }
      throw err;
    }
    onAdded();
    onClose();
  };
  return (
    <FormDialog title="Add member" submit="Add" busyLabel="Adding…" onClose={onClose} onSubmit={add}>
      <label className="field">
        Email
        <input name="email" type="email" autoComplete="off" value={email} onChange={(e) => setEmail(e.target.value)} maxLength={320} required autoFocus />
      </label>
      <label className="field">
        Role
        <select name="role" value={role} onChange={(e) => setRole(e.target.value as TeamRole)}>
          {roles.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
      </label>
      <label className="field">
        Password
        <input
          name="password"
          type="password"
          autoComplete="new-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          minLength={PASSWORD_MIN_LENGTH}
          maxLength={1024}
          required={needsPassword}
          aria-describedby="member-password-hint"
        />
      </label>
      <div id="member-password-hint" className="faint">
        {needsPassword
          ? `A new account: give the password it will sign in with (at least ${PASSWORD_MIN_LENGTH} characters).`
          : `For a new account only (at least ${PASSWORD_MIN_LENGTH} characters); leave it empty for someone who already has one: they keep their own.`}
      </div>
    </FormDialog>
  );
}

function ChangePasswordDialog({ onClose, onChanged }: { onClose: () => void; onChanged: () => void }) {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const differ = again !== "" && again !== next;
  const change = async () => {
    await api("POST", "/v1/auth/password", { currentPassword: current, newPassword: next });
    onChanged();
    onClose();
  };
  return (
    <FormDialog title="Change my password" submit="Change password" busyLabel="Changing…" canSubmit={!differ} onClose={onClose} onSubmit={change}>
      <label className="field">
        Current password
        <input name="currentPassword" type="password" autoComplete="current-password" value={current} onChange={(e) => setCurrent(e.target.value)} required autoFocus />
      </label>
      <label className="field">
        New password
        <input name="newPassword" type="password" autoComplete="new-password" value={next} onChange={(e) => setNext(e.target.value)} minLength={PASSWORD_MIN_LENGTH} maxLength={1024} required />
      </label>
      <label className="field">
        Repeat the new password
        <input name="repeatPassword" type="password" autoComplete="new-password" value={again} onChange={(e) => setAgain(e.target.value)} required />
      </label>
      <div className="faint">
        {differ ? "The two new passwords differ." : `At least ${PASSWORD_MIN_LENGTH} characters. Your other sessions are signed out.`}
      </div>
    </FormDialog>
  );
}
