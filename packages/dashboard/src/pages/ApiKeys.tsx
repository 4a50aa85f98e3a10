// API keys: create (the secret is shown once, with a copy button), revoke, last used.
import { useState } from "react";
import { api, type ApiKey } from "../api.ts";
import { ago, AsyncTable, copyText, Dialog, FormDialog, PageHead, useConfirm, useLoad, useNow } from "../ui.tsx";

export function ApiKeys() {
  const confirm = useConfirm();
  const now = useNow(10_000);
  const [creating, setCreating] = useState(false);
  const keys = useLoad((signal) => api<ApiKey[]>("GET", "/v1/api-keys", undefined, { signal }), []);
  const revoke = (key: ApiKey) =>
    confirm.ask({
      title: "Revoke API key",
      body: (
        <p>
          Revoke <strong>{key.name}</strong> (<code>{key.prefix}…</code>)? Requests with it fail from now on.
        </p>
      ),
      action: "Revoke",
      danger: true,
      run: async () => {
        await api("DELETE", `/v1/api-keys/${key.id}`);
        keys.reload();
      },
    });
  return (
    <>
      <PageHead title="API keys">
        <span className="spacer" />
        <button className="primary" onClick={() => setCreating(true)}>
          + New key
        </button>
      </PageHead>
      <div className="section">
        <AsyncTable
          state={keys}
          what="Loading keys"
          label="API keys"
          empty="No keys yet."
          head={
            <>
              <th>Name</th>
              <th>Key</th>
              <th className="hide-sm">Created</th>
              <th>Last used</th>
              <th />
            </>
          }
          row={(k: ApiKey) => (
            <tr key={k.id} data-key={k.name}>
              <td>{k.name}</td>
              <td className="mono dim">{k.prefix}…</td>
              <td className="dim nowrap hide-sm">{ago(k.createdAt, now)}</td>
              <td className="dim nowrap">{k.lastUsedAt ? ago(k.lastUsedAt, now) : "never"}</td>
              <td className="actions">
                {k.revokedAt ? (
                  <span className="badge revoked">revoked</span>
                ) : (
                  <button className="small danger" onClick={() => revoke(k)} aria-label={`Revoke ${k.name}`}>
                    Revoke
                  </button>
                )}
              </td>
            </tr>
          )}
        />
      </div>
      {creating && <CreateKeyDialog onClose={() => setCreating(false)} onCreated={keys.reload} />}
      {confirm.element}
    </>
  );
}

function CreateKeyDialog({ onClose, onCreated }: { onClose: () => void; onCreated: () => void }) {
  const [name, setName] = useState("");
  const [secret, setSecret] = useState<string>();
  const [copied, setCopied] = useState(false);
  const create = async () => {
    const created = await api<{ secret: string }>("POST", "/v1/api-keys", { name });
    setSecret(created.secret);
    onCreated();
  };
  if (secret) {
    return (
      <Dialog title="Key created" open onClose={onClose}>
        <div className="stack">
          <p className="dim" style={{ margin: 0 }}>
            Copy it now: this is the only time the secret is shown.
          </p>
          <div className="secret" data-testid="new-key-secret">
            {secret}
          </div>
          <div className="buttons">
            <button
              onClick={() =>
                void copyText(secret)
                  .then(() => setCopied(true))
                  .catch(() => undefined)
              }
            >
              {copied ? "Copied" : "Copy"}
            </button>
            <button className="primary" onClick={onClose} autoFocus>
              Done
            </button>
          </div>
        </div>
      </Dialog>
    );
  }
  return (
    <FormDialog title="New API key" submit="Create" busyLabel="Creating…" onClose={onClose} onSubmit={create}>
      <label className="field">
        Name
        <input name="name" value={name} onChange={(e) => setName(e.target.value)} placeholder="ci, laptop, …" maxLength={100} required autoFocus />
      </label>
    </FormDialog>
  );
}
