// Component tests (vitest, happy-dom): the pages' pure helpers and the components whose behaviour
// matters most, rendered against a stand-in for the network (fetch answers what the API would).
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { api, setCsrfToken, type Member, type Sandbox, type Session, type Template } from "../src/api.ts";
import { match } from "../src/router.tsx";
import { ago, bytes, duration, mb } from "../src/ui.tsx";
import { parseListeningPorts, portUrl } from "../src/pages/SandboxDetail.tsx";
import { SandboxList, summary, timeLeft } from "../src/pages/Sandboxes.tsx";
import { Templates } from "../src/pages/Templates.tsx";
import { ApiKeys } from "../src/pages/ApiKeys.tsx";
import { SignIn } from "../src/pages/SignIn.tsx";
import { Team } from "../src/pages/Team.tsx";

type Handler = (url: URL, init: RequestInit) => unknown;
const calls: Array<{ method: string; url: URL; init: RequestInit }> = [];

function serve(routes: Record<string, Handler>): void {
  vi.stubGlobal("fetch", async (input: string, init: RequestInit = {}) => {
    const url = new URL(input, "http://dash.test");
    const method = init.method ?? "GET";
    calls.push({ method, url, init });
    const handler = routes[`${method} ${url.pathname}`];
    if (!handler) return new Response(JSON.stringify({ code: "not_found", message: "no route" }), { status: 404, headers: { "content-type": "application/json" } });
    const body = handler(url, init);
    if (body instanceof Response) return body;
    if (body === undefined) return new Response(null, { status: 204 });
    return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
  });
}

beforeEach(() => {
  calls.length = 0;
  setCsrfToken("");
});
afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("helpers", () => {
  test("formats bytes, sizes and durations", () => {
    expect(bytes(0)).toBe("0 B");
    expect(bytes(1536)).toBe("1.5 KiB");
    expect(bytes(300 * 1024 * 1024)).toBe("300 MiB");
    expect(mb(512)).toBe("512 MiB");
    expect(mb(2048)).toBe("2 GiB");
    expect(duration(59)).toBe("59s");
    expect(duration(3 * 60 + 5)).toBe("3m 05s");
    expect(duration(2 * 3600 + 60)).toBe("2h 01m");
    expect(duration(3 * 86_400 + 4 * 3600)).toBe("3d 4h");
    expect(ago(new Date(Date.now() - 90_000).toISOString())).toBe("1m 30s ago");
    expect(ago(null)).toBe("—");
  });

  test("matches routes and decodes their params", () => {
    expect(match("/ui/sandboxes/:id", "/ui/sandboxes/abc123")).toEqual({ id: "abc123" });
    expect(match("/ui/sandboxes/:id", "/ui/sandboxes")).toBeNull();
    expect(match("/ui/sandboxes", "/ui/sandboxes/")).toEqual({});
    expect(match("/ui/templates", "/ui/keys")).toBeNull();
  });

  test("finds listening ports in /proc/net/tcp, leaving envd's out", () => {
    const proc = [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1",
      "   1: 00000000:C33F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1",
      "   2: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000  1000        0 3 1",
      "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0",
    ].join("\n");
    expect(parseListeningPorts(proc)).toEqual([3000, 8080]);
  });

  test("links a port through the edge proxy's host names", () => {
    expect(portUrl("abc", 3000, { hostname: "127.0.0.1", protocol: "http:", port: "8080" } as Location)).toBe("http://3000-abc.localhost:8080/");
    expect(portUrl("abc", 80, { hostname: "wrenn.example.com", protocol: "https:", port: "" } as Location)).toBe("https://80-abc.wrenn.example.com/");
  });

  test("time left: the idle timeout for a running sandbox, never for 0, nothing when not running", () => {
    const base = { state: "running", timeoutSec: 300, endAt: null } as unknown as Sandbox;
    expect(timeLeft(base, Date.now())).toBe("5m 00s idle");
    expect(timeLeft({ ...base, timeoutSec: 0 }, Date.now())).toBe("never");
    expect(timeLeft({ ...base, state: "paused" }, Date.now())).toBe("—");
    expect(timeLeft({ ...base, endAt: new Date(Date.now() + 65_000).toISOString() }, Date.now())).toMatch(/^1m 0[45]s$/);
  });
});

describe("api()", () => {
  test("sends the CSRF token on mutations only, and turns error bodies into ApiError", async () => {
    serve({
      "GET /v1/thing": () => ({ ok: true }),
      "POST /v1/thing": () => new Response(JSON.stringify({ code: "conflict", message: "already there" }), { status: 409, headers: { "content-type": "application/json" } }),
    });
    setCsrfToken("tok");
    await api("GET", "/v1/thing");
    await expect(api("POST", "/v1/thing", { a: 1 })).rejects.toMatchObject({ status: 409, code: "conflict", message: "already there" });
    expect((calls[0]!.init.headers as Record<string, string>)["x-csrf-token"]).toBeUndefined();
    expect((calls[1]!.init.headers as Record<string, string>)["x-csrf-token"]).toBe("tok");
  });
});

describe("pages", () => {
  const templates: Template[] = [
    { id: "1", name: "base", kind: "base", platform: true, hostId: null, sizeBytes: 1 << 30, createdAt: new Date().toISOString() },
    { id: "2", name: "mine", kind: "snapshot", platform: false, hostId: "h", sizeBytes: 1 << 20, createdAt: new Date().toISOString() },
  ];

  test("templates: platform ones offer no delete; a team one is deleted after confirmation", async () => {
    let deleted = "";
    serve({
      "GET /v1/templates": () => templates.filter((t) => t.name !== deleted),
      "GET /v1/templates/builds": () => [],
      "DELETE /v1/templates/mine": () => {
        deleted = "mine";
        return undefined;
      },
    });
    render(<Templates />);
    const row = await screen.findByText("mine");
    expect(screen.queryByRole("button", { name: "Delete base" })).toBeNull();
    expect(screen.getByText("read-only")).toBeTruthy();
    expect(row).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Delete mine" }));
    fireEvent.click(await screen.findByRole("button", { name: "Delete" }));
    await waitFor(() => expect(screen.queryByText("mine")).toBeNull());
    expect(calls.some((c) => c.method === "DELETE" && c.url.pathname === "/v1/templates/mine")).toBe(true);
  });

  test("API keys: the new secret is shown once; revoke asks first", async () => {
    const keys = [{ id: "k1", name: "ci", prefix: "wrn_abcd", createdAt: new Date().toISOString(), lastUsedAt: null, revokedAt: null as string | null }];
    serve({
      "GET /v1/api-keys": () => keys,
      "POST /v1/api-keys": (_url, init) => {
        const { name } = JSON.parse(String(init.body)) as { name: string };
        keys.unshift({ id: "k2", name, prefix: "wrn_efgh", createdAt: new Date().toISOString(), lastUsedAt: null, revokedAt: null });
        return { ...keys[0], secret: "wrn_efgh_the_secret" };
      },
      "DELETE /v1/api-keys/k1": () => {
        keys.find((k) => k.id === "k1")!.revokedAt = new Date().toISOString();
        return undefined;
      },
    });
    render(<ApiKeys />);
    await screen.findByText("ci");
    expect(screen.getByText("never")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "+ New key" }));
    fireEvent.change(await screen.findByRole("textbox", { name: "Name" }), { target: { value: "laptop" } });
    fireEvent.click(screen.getByRole("button", { name: "Create" }));
    expect((await screen.findByTestId("new-key-secret")).textContent).toBe("wrn_efgh_the_secret");
    fireEvent.click(screen.getByRole("button", { name: "Done" }));
    await screen.findByText("laptop");
    expect(screen.queryByTestId("new-key-secret")).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Revoke ci" }));
    fireEvent.click(await screen.findByRole("button", { name: "Revoke" }));
    await screen.findByText("revoked");
  });

  test("sign-in posts the email and password and hands back the session; a 401 shows its message", async () => {
    let attempts = 0;
    serve({
      "POST /v1/auth/login": (_url, init) => {
        attempts++;
        const body = JSON.parse(String(init.body)) as { email?: string; password?: string };
        if (body.password !== "right-password") return new Response(JSON.stringify({ code: 401, message: "wrong email or password" }), { status: 401, headers: { "content-type": "application/json" } });
        return { user: { id: "u", email: body.email }, team: { id: "t", name: "admin", isAdmin: true }, csrfToken: "c" };
      },
    });
    const signedIn = vi.fn();
    render(<SignIn onSignedIn={signedIn} />);
    fireEvent.change(screen.getByLabelText("Email"), { target: { value: "a@b.c" } });
    fireEvent.change(screen.getByLabelText("Password"), { target: { value: "nope" } });
    fireEvent.submit(screen.getByRole("form", { name: "Sign in" }));
    expect((await screen.findByRole("alert")).textContent).toContain("wrong email or password");
    fireEvent.change(screen.getByLabelText("Password"), { target: { value: "right-password" } });
    fireEvent.submit(screen.getByRole("form", { name: "Sign in" }));
    await waitFor(() => expect(signedIn).toHaveBeenCalledOnce());
    expect(signedIn.mock.calls[0]![0]).toMatchObject({ csrfToken: "c", team: { isAdmin: true } });
    expect(attempts).toBe(2);
  });

  test("sandboxes: the list counts states, filters by text, and kills only after confirmation", async () => {
    const now = new Date().toISOString();
    const sandbox = (id: string, state: string, app: string): Sandbox =>
      ({ id, template: "base", state, vcpus: 1, memoryMb: 512, diskSizeMb: 5120, timeoutSec: 300, metadata: { app }, hostId: null, envdVersion: null, createdAt: now, startedAt: now, endAt: null, endedAt: null }) as Sandbox;
    let list = [sandbox("aaa111", "running", "web"), sandbox("bbb222", "paused", "worker")];
    serve({
      "GET /v1/sandboxes": () => ({ sandboxes: list, nextCursor: null }),
      "DELETE /v1/sandboxes/aaa111": () => {
        list = list.filter((s) => s.id !== "aaa111");
        return undefined;
      },
    });
    expect(summary(list)).toBe("1 running · 1 paused");
    render(<SandboxList />);
    await screen.findByText("aaa111");
    expect(screen.getByText("1 running · 1 paused")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Resume bbb222" })).toBeTruthy();
    fireEvent.change(screen.getByRole("searchbox", { name: "Filter sandboxes" }), { target: { value: "app=worker" } });
    await waitFor(() => expect(screen.queryByText("aaa111")).toBeNull());
    fireEvent.change(screen.getByRole("searchbox", { name: "Filter sandboxes" }), { target: { value: "" } });
    fireEvent.click(await screen.findByRole("button", { name: "Kill aaa111" }));
    expect(calls.some((c) => c.method === "DELETE")).toBe(false);
    fireEvent.click(await screen.findByRole("button", { name: "Kill" }));
    await waitFor(() => expect(screen.queryByText("aaa111")).toBeNull());
    expect(calls.filter((c) => c.method === "DELETE").map((c) => c.url.pathname)).toEqual(["/v1/sandboxes/aaa111"]);
  });

  describe("team", () => {
    const error = (status: number, code: string, message: string) => new Response(JSON.stringify({ code, message }), { status, headers: { "content-type": "application/json" } });
    const owner: Member = { userId: "u1", email: "owner@example.com", role: "owner", createdAt: new Date().toISOString() };
    const session = (user: Session["user"]): Session => ({ user, team: { id: "t", name: "acme", isAdmin: false }, csrfToken: "c" });

    test("adds a member (a new email needs a password, an existing account must come without one) and removes one; the last owner's refusal shows", async () => {
      let members: Member[] = [owner];
      const accounts = new Set(["owner@example.com", "old@example.com"]);
      const posted: Array<Record<string, unknown>> = [];
      serve({
        "GET /v1/teams/current/members": () => members,
        "POST /v1/teams/current/members": (_url, init) => {
          const body = JSON.parse(String(init.body)) as { email: string; password?: string; role: Member["role"] };
          posted.push(body);
          if (accounts.has(body.email) && body.password !== undefined) return error(409, "conflict", `${body.email} already has an account; add it without a password (its own stays).`);
          if (!accounts.has(body.email) && body.password === undefined) return error(400, "invalid_argument", `${body.email} is new: give the password it will sign in with.`);
          accounts.add(body.email);
          const member: Member = { userId: `u${members.length + 1}`, email: body.email, role: body.role, createdAt: new Date().toISOString() };
          members = [...members, member];
          return new Response(JSON.stringify(member), { status: 201, headers: { "content-type": "application/json" } });
        },
        "DELETE /v1/teams/current/members/u1": () => error(409, "failed_precondition", "The team's last owner cannot be removed; make another member an owner first."),
        "DELETE /v1/teams/current/members/u2": () => {
          members = members.filter((m) => m.userId !== "u2");
          return undefined;
        },
      });
      render(<Team session={session({ id: "u1", email: "owner@example.com" })} />);
      const table = () => screen.getByRole("table", { name: "Members" });
      await within(await screen.findByRole("table", { name: "Members" })).findByText("owner@example.com");
      expect(within(table()).getByText("(you)")).toBeTruthy();

      const add = async (fields: Record<string, string>) => {
        fireEvent.click(screen.getByRole("button", { name: "+ Add member" }));
        for (const [label, value] of Object.entries(fields)) fireEvent.change(await screen.findByLabelText(label), { target: { value } });
        fireEvent.click(screen.getByRole("button", { name: "Add" }));
      };

      // A new email without a password: the API asks for one and the field becomes required.
      await add({ Email: "new@example.com", Role: "admin" });
      expect((await screen.findByRole("alert")).textContent).toContain("is new: give the password");
      const password = screen.getByLabelText("Password") as HTMLInputElement;
      expect(password.required).toBe(true);
      fireEvent.change(password, { target: { value: "a-long-enough-password" } });
      fireEvent.click(screen.getByRole("button", { name: "Add" }));
      await within(table()).findByText("new@example.com");
      await waitFor(() => expect(screen.queryByRole("dialog", { name: "Add member" })).toBeNull());
      expect(posted.at(-1)).toEqual({ email: "new@example.com", role: "admin", password: "a-long-enough-password" });
      expect(within(table()).getByText("admin")).toBeTruthy();

      // An existing account given a password: refused, and the password is cleared for a retry without.
      await add({ Email: "old@example.com", Password: "another-long-password" });
      expect((await screen.findByRole("alert")).textContent).toContain("already has an account");
      expect((screen.getByLabelText("Password") as HTMLInputElement).value).toBe("");
      fireEvent.click(screen.getByRole("button", { name: "Add" }));
      await within(table()).findByText("old@example.com");
      expect(posted.at(-1)).toEqual({ email: "old@example.com", role: "member" });

      // The last owner: the API's refusal shows in the confirmation, and nothing changes.
      fireEvent.click(screen.getByRole("button", { name: "Remove owner@example.com" }));
      fireEvent.click(await screen.findByRole("button", { name: "Remove" }));
      expect((await screen.findByRole("alert")).textContent).toContain("last owner cannot be removed");
      fireEvent.click(screen.getByRole("button", { name: "Cancel" }));
      expect(within(table()).getByText("owner@example.com")).toBeTruthy();

      // Another member goes after confirmation.
      fireEvent.click(screen.getByRole("button", { name: "Remove new@example.com" }));
      expect(calls.some((c) => c.method === "DELETE" && c.url.pathname.endsWith("/u2"))).toBe(false);
      fireEvent.click(await screen.findByRole("button", { name: "Remove" }));
      await waitFor(() => expect(within(table()).queryByText("new@example.com")).toBeNull());
    });

    test("a member sees no add or remove; the signed-in user changes their password (a wrong current one shows the API's message)", async () => {
      const changes: unknown[] = [];
      serve({
        "GET /v1/teams/current/members": () => [owner, { userId: "u2", email: "me@example.com", role: "member", createdAt: new Date().toISOString() }],
        "POST /v1/auth/password": (_url, init) => {
          const body = JSON.parse(String(init.body)) as { currentPassword: string; newPassword: string };
          changes.push(body);
          return body.currentPassword === "the-old-password" ? undefined : error(403, "forbidden", "The current password is wrong.");
        },
      });
      render(<Team session={session({ id: "u2", email: "me@example.com" })} />);
      await within(await screen.findByRole("table", { name: "Members" })).findByText("owner@example.com");
      expect(screen.queryByRole("button", { name: "+ Add member" })).toBeNull();
      expect(screen.queryByRole("button", { name: /^Remove/ })).toBeNull();

      fireEvent.click(screen.getByRole("button", { name: "Change my password" }));
      fireEvent.change(await screen.findByLabelText("Current password"), { target: { value: "not-it" } });
      fireEvent.change(screen.getByLabelText("New password"), { target: { value: "the-new-password-1" } });
      fireEvent.change(screen.getByLabelText("Repeat the new password"), { target: { value: "the-new-password-2" } });
      expect((screen.getByRole("button", { name: "Change password" }) as HTMLButtonElement).disabled).toBe(true);
      fireEvent.change(screen.getByLabelText("Repeat the new password"), { target: { value: "the-new-password-1" } });
      fireEvent.click(screen.getByRole("button", { name: "Change password" }));
      expect((await screen.findByRole("alert")).textContent).toContain("The current password is wrong.");
      fireEvent.change(screen.getByLabelText("Current password"), { target: { value: "the-old-password" } });
      fireEvent.click(screen.getByRole("button", { name: "Change password" }));
      expect((await screen.findByRole("status")).textContent).toContain("Password changed");
      expect(changes.at(-1)).toEqual({ currentPassword: "the-old-password", newPassword: "the-new-password-1" });
      expect(screen.queryByRole("dialog", { name: "Change my password" })).toBeNull();
    });

    test("signed in with an API key: members are managed, and there is no password to change", async () => {
      serve({ "GET /v1/teams/current/members": () => [owner] });
      render(<Team session={session(null)} />);
      await within(await screen.findByRole("table", { name: "Members" })).findByText("owner@example.com");
      expect(screen.getByRole("button", { name: "+ Add member" })).toBeTruthy();
      expect(screen.getByRole("button", { name: "Remove owner@example.com" })).toBeTruthy();
      expect(screen.queryByRole("button", { name: "Change my password" })).toBeNull();
      expect(screen.getByText(/no password to change/)).toBeTruthy();
    });
  });
});
