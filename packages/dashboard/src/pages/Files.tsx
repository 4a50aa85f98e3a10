// A sandbox's file browser over the /v1 file routes: list, upload (drag and drop or the picker),
// download, rename, delete, new folder.
import { useEffect, useRef, useState, type DragEvent } from "react";
import { api, apiUrl, errorMessage, type FileEntry } from "../api.ts";
import { Async, bytes, ErrorBox, FormDialog, Table, useConfirm, useLoad } from "../ui.tsx";

const parentOf = (path: string) => (path === "/" ? "/" : path.replace(/\/[^/]+\/?$/, "") || "/");
const join = (dir: string, name: string) => (dir.endsWith("/") ? dir + name : `${dir}/${name}`);

export function Files({ sandboxId }: { sandboxId: string }) {
  const base = `/v1/sandboxes/${sandboxId}/files`;
  const [dir, setDir] = useState<string>();
  const [over, setOver] = useState(false);
  const [uploading, setUploading] = useState<string>();
  const [error, setError] = useState<string>();
  const [renaming, setRenaming] = useState<FileEntry>();
  const confirm = useConfirm();
  const picker = useRef<HTMLInputElement>(null);

  // Start at the default user's home: "." resolves there.
  useEffect(() => {
    if (dir !== undefined) return;
    api<FileEntry>("GET", `${base}/stat`, undefined, { query: { path: "." } })
      .then((entry) => setDir(entry.path || "/"))
      .catch(() => setDir("/"));
  }, [base, dir]);

  const listing = useLoad(
    (signal) => (dir === undefined ? new Promise<never>(() => undefined) : api<{ entries: FileEntry[] }>("GET", `${base}/list`, undefined, { signal, query: { path: dir } })),
    [base, dir],
  );

  const upload = async (files: FileList | File[]) => {
    if (!dir || files.length === 0) return;
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    setUploading([...files].map((f) => f.name).join(", "));
    setError(undefined);
    try {
      await api("POST", base, form, { query: { path: dir.endsWith("/") ? dir : `${dir}/` } });
      listing.reload();
    } catch (err) {
      setError(`Upload failed: ${errorMessage(err)}`);
    } finally {
      setUploading(undefined);
    }
  };

  const drop = (event: DragEvent) => {
    event.preventDefault();
    setOver(false);
    void upload(event.dataTransfer.files);
  };

  const remove = (entry: FileEntry) =>
    confirm.ask({
      title: "Delete",
      body: (
        <p>
          Delete <code>{entry.path}</code>
          {entry.type === "dir" ? " and everything in it" : ""}?
        </p>
      ),
      action: "Delete",
      danger: true,
      run: async () => {
        await api("DELETE", base, undefined, { query: { path: entry.path } });
        listing.reload();
      },
    });

  const crumbs = (dir ?? "").split("/").filter(Boolean);
  const entries = [...(listing.data?.entries ?? [])].sort((a, b) => Number(b.type === "dir") - Number(a.type === "dir") || a.name.localeCompare(b.name));

  return (
    <div
      className={`dropzone stack${over ? " over" : ""}`}
      onDragOver={(event) => {
        event.preventDefault();
        setOver(true);
      }}
      onDragLeave={() => setOver(false)}
      onDrop={drop}
      data-testid="files"
    >
      <div className="row">
        <nav className="crumbs" aria-label="Path">
          <button onClick={() => setDir("/")}>/</button>
          {crumbs.map((part, i) => (
            <span key={i}>
              <button onClick={() => setDir(`/${crumbs.slice(0, i + 1).join("/")}`)}>{part}</button>/
            </span>
          ))}
        </nav>
        <span style={{ flex: 1 }} />
        <button className="small" onClick={() => listing.reload()} aria-label="Refresh files">
          ↻
        </button>
        <button className="small" onClick={() => setRenaming({ name: "", path: "", type: "dir", size: 0, permissions: "", owner: "", modifiedAt: null })}>
          New folder
        </button>
        <button className="small" onClick={() => picker.current?.click()}>
          Upload
        </button>
        <input ref={picker} type="file" multiple hidden data-testid="upload-input" onChange={(e) => e.target.files && void upload(e.target.files)} />
      </div>
      {uploading && <div className="dim">Uploading {uploading}…</div>}
      {error && <ErrorBox error={error} />}
      <Async state={listing} what="Listing">
        {() => (
          <Table label="Files">
            {dir !== "/" && (
              <tr>
                <td className="mono" colSpan={4}>
                  <button className="small ghost" onClick={() => setDir(parentOf(dir!))}>
                    ..
                  </button>
                </td>
              </tr>
            )}
            {entries.length === 0 && (
              <tr>
                <td className="empty" colSpan={4}>
                  Empty. Drop files here to upload.
                </td>
              </tr>
            )}
            {entries.map((entry) => (
              <tr key={entry.path} data-file={entry.name}>
                <td className="mono" style={{ wordBreak: "break-all", whiteSpace: "normal" }}>
                  {entry.type === "dir" ? (
                    <button className="small ghost" onClick={() => setDir(entry.path)} style={{ color: "var(--accent)" }}>
                      {entry.name}/
                    </button>
                  ) : (
                    <a href={apiUrl(base, { path: entry.path })} download={entry.name} title="Download">
                      {entry.name}
                    </a>
                  )}
                </td>
                <td className="num dim mono">{entry.type === "dir" ? "" : bytes(entry.size)}</td>
                <td className="dim mono hide-sm">{entry.permissions}</td>
                <td className="actions">
                  <button className="small ghost" onClick={() => setRenaming(entry)} aria-label={`Rename ${entry.name}`}>
                    Rename
                  </button>
                  <button className="small ghost" onClick={() => remove(entry)} aria-label={`Delete ${entry.name}`}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </Table>
        )}
      </Async>
      {renaming && dir && (
        <NameDialog
          entry={renaming}
          onClose={() => setRenaming(undefined)}
          onSave={async (name) => {
            if (renaming.path) await api("POST", `${base}/move`, { from: renaming.path, to: join(parentOf(renaming.path), name) });
            else await api("POST", `${base}/mkdir`, { path: join(dir, name) });
            listing.reload();
          }}
        />
      )}
      {confirm.element}
    </div>
  );
}

function NameDialog({ entry, onClose, onSave }: { entry: FileEntry; onClose: () => void; onSave: (name: string) => Promise<void> }) {
  const [name, setName] = useState(entry.name);
  const action = entry.path ? "Rename" : "Create";
  return (
    <FormDialog
      title={entry.path ? `Rename ${entry.name}` : "New folder"}
      submit={action}
      canSubmit={!!name}
      onClose={onClose}
      onSubmit={async () => {
        await onSave(name);
        onClose();
      }}
    >
      <label className="field">
        Name
        <input name="name" className="mono" value={name} onChange={(e) => setName(e.target.value)} required pattern="[^/]+" autoFocus />
      </label>
    </FormDialog>
  );
}
