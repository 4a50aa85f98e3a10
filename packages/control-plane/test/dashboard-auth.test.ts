// The dashboard's sign-in (issue 6): password hashing, POST /v1/auth/login with a password or an
// API key, the session cookie on every route, CSRF and WebSocket-Origin checks, sign-out, expiry,
// the sign-in rate limit, the audit of sign-ins, and the first admin user of bootstrap.ts; over
// real HTTP on PGlite and on PostgreSQL.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import { hashPassword, PASSWORD_MIN_LENGTH, randomPassword, verifyAgainstDummy, verifyPassword } from "../src/api/passwords.js";
import { LOGIN_RATE_LIMIT } from "../src/api/routes/auth.js";
import { ADMIN_PASSWORD_FILE, ADMIN_USER_EMAIL, bootstrapAdmin } from "../src/bootstrap.js";
import { SESSION_TTL_MS } from "../src/db/sessions.js";
import { startApi, type ApiUnderTest } from "./api-harness.js";
import { skipPostgres } from "./postgres-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe("dashboard passwords", () => {
  test("scrypt N=2^15 r=8 p=1 with a 16-byte salt and a 64-byte key, salted per hash, checked in constant time", async () => {
    const hash = await hashPassword("correct horse battery");
    const match = /^scrypt\$32768\$8\$1\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(hash);
    assert.ok(match, hash);
    assert.equal(Buffer.from(match[1]!, "base64").length, 16);
    assert.equal(Buffer.from(match[2]!, "base64").length, 64);
    assert.equal(await verifyPassword("correct horse battery", hash), true);
    assert.equal(await verifyPassword("correct horse batterY", hash), false);
    assert.equal(await verifyPassword("", hash), false);
    assert.notEqual(await hashPassword("correct horse battery"), hash, "a new salt each time");
    for (const bad of ["", "plain", "scrypt$1$8$1$AAAA$AAAA", "scrypt$32768$8$1$$", "bcrypt$x$y$z$a$b", `scrypt$${2 ** 30}$8$1$AAAA$AAAA`]) {
      assert.equal(await verifyPassword("x", bad), false, bad);
    }
    assert.equal(await verifyAgainstDummy("anything"), false);
    const generated = randomPassword(20);
    assert.match(generated, /^[A-Za-z2-9]{20}$/);
    assert.ok(generated.length >= PASSWORD_MIN_LENGTH);
    assert.notEqual(randomPassword(20), generated);
  });
});

const runs = [
  { name: "PGlite", database: "pglite" as const, skip: false },
  { name: "PostgreSQL", database: "postgres" as const, skip: skipPostgres },
];

for (const run of runs) {
  describe(`dashboard sign-in on ${run.name}`, { skip: run.skip }, () => {
    let api: ApiUnderTest;
    let user: { id: string; email: string; password: string };
    /** Each test signs in from its own client address (X-Forwarded-For; the API trusts the proxy), so the sign-in budget is per test. */
    let nextAddress = 1;
    const newAddress = () => `192.0.2.${nextAddress++}`;

    interface Answer {
      status: number;
      body: Json;
      headers: Headers;
    }

    async function request(method: string, route: string, options: { cookie?: string; csrf?: string; key?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
      const headers: Record<string, string> = { ...options.headers };
      if (options.cookie) headers.cookie = options.cookie;
      if (options.csrf !== undefined) headers["x-csrf-token"] = options.csrf;
      if (options.key) headers["x-api-key"] = options.key;
      if (options.body !== undefined) headers["content-type"] = "application/json";
      const response = await fetch(api.url + route, { method, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
      const text = await response.text();
      return { status: response.status, body: text ? (JSON.parse(text) as Json) : {}, headers: response.headers };
    }

    /** Signs in; the answer, with the cookie to send back (`wrenn_session=…`). */
    async function login(body: unknown, address = newAddress(), headers: Record<string, string> = {}): Promise<Answer & { cookie: string }> {
      const answer = await request("POST", "/v1/auth/login", { body, headers: { "x-forwarded-for": address, ...headers } });
      const cookie = answer.headers.get("set-cookie")?.split(";")[0] ?? "";
      return { ...answer, cookie };
    }

    before(async () => {
      api = await startApi({ database: run.database, agents: [], config: { trustProxy: true } });
      const password = `pw-${randomBytes(8).toString("hex")}`;
      const created = await api.repos.users.create({ email: `Dev-${randomBytes(3).toString("hex")}@Example.com`, passwordHash: await hashPassword(password) });
      await api.repos.teams.addMember(api.teamA.teamId, created.id, "member");
      user = { id: created.id, email: created.email, password };
    });

    after(async () => {
      await api?.close();
    });

    test("a user signs in: the session (user, team, CSRF token) and an HttpOnly, SameSite=Strict cookie; the sign-in is audited with the user as actor", async () => {
      const address = newAddress();
      const answer = await login({ email: user.email.toUpperCase(), password: user.password }, address);
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.deepEqual(answer.body, {
        user: { id: user.id, email: user.email },
        team: { id: api.teamA.teamId, name: "team-a", isAdmin: false },
        csrfToken: answer.body.csrfToken,
      });
      assert.match(answer.body.csrfToken, /^[A-Za-z0-9_-]{40,}$/);
      const setCookie = answer.headers.get("set-cookie")!;
      assert.match(setCookie, /^wrenn_session=[A-Za-z0-9_-]{40,};/);
      const attributes = setCookie.split(";").slice(1).map((part) => part.trim());
      assert.deepEqual(attributes.sort(), ["HttpOnly", `Max-Age=${SESSION_TTL_MS / 1000}`, "Path=/", "SameSite=Strict"]);
      // Only the cookie's hash is stored.
      const token = answer.cookie.slice("wrenn_session=".length);
      const active = await api.repos.sessions.findActive(token);
      assert.ok(active);
      assert.notEqual(active.session.id, token);
      assert.equal(active.session.userId, user.id);
      assert.equal(active.session.apiKeyId, null);

      const entries = await api.repos.audit.list(api.teamA.teamId, { action: "auth.login" });
      const success = entries.find((entry) => entry.actorId === user.id && (entry.details as Json).status === 200);
      assert.ok(success, JSON.stringify(entries));
      assert.equal(success.actorType, "user");
      assert.equal(success.sourceIp, address);
    });

    test("over https (X-Forwarded-Proto) the cookie is Secure", async () => {
      const answer = await login({ email: user.email, password: user.password }, newAddress(), { "x-forwarded-proto": "https" });
      assert.equal(answer.status, 200);
      assert.match(answer.headers.get("set-cookie")!, /; Secure(;|$)/);
    });

    test("a wrong password and an unknown email get the same 401; both are audited", async () => {
      const wrong = await login({ email: user.email, password: `${user.password}x` });
      const unknown = await login({ email: `nobody-${randomBytes(3).toString("hex")}@example.com`, password: user.password });
      assert.equal(wrong.status, 401);
      assert.equal(unknown.status, 401);
      assert.deepEqual(wrong.body, unknown.body);
      assert.deepEqual(wrong.body, { code: "unauthenticated", message: "Wrong email or password." });
      assert.equal(wrong.headers.get("set-cookie"), null);
      const failures = (await api.repos.audit.list(api.teamA.teamId, { action: "auth.login" })).filter((entry) => (entry.details as Json).status === 401);
      assert.ok(failures.some((entry) => entry.actorType === "user" && entry.actorId === user.id && (entry.details as Json).outcome === "failure"), JSON.stringify(failures));
      const malformed = await login({ email: user.email });
      assert.equal(malformed.status, 400);
    });

    test("the cookie authenticates the existing routes; GET needs no CSRF token", async () => {
      const { cookie } = await login({ email: user.email, password: user.password });
      const list = await request("GET", "/v1/sandboxes", { cookie });
      assert.equal(list.status, 200, JSON.stringify(list.body));
      assert.deepEqual(list.body.sandboxes, []);
      const team = await request("GET", "/v1/teams/current", { cookie });
      assert.equal(team.status, 200);
      assert.equal(team.body.id, api.teamA.teamId);
      const none = await request("GET", "/v1/sandboxes");
      assert.equal(none.status, 401);
      const forged = await request("GET", "/v1/sandboxes", { cookie: "wrenn_session=not-a-session" });
      assert.equal(forged.status, 401);
      const admin = await request("GET", "/v1/teams", { cookie });
      assert.equal(admin.status, 403, "a team that is not an admin team is no admin");
    });

    test("a cookie request that changes something needs the session's X-CSRF-Token; API-key requests do not", async () => {
      const { cookie, body } = await login({ email: user.email, password: user.password });
      const without = await request("POST", "/v1/api-keys", { cookie, body: { name: "from the dashboard" } });
      assert.equal(without.status, 403);
      assert.deepEqual(without.body, { code: "forbidden", message: "missing or wrong X-CSRF-Token" });
      const wrong = await request("POST", "/v1/api-keys", { cookie, csrf: `${body.csrfToken as string}x`, body: { name: "from the dashboard" } });
      assert.equal(wrong.status, 403);
      const other = await login({ email: user.email, password: user.password });
      const crossed = await request("POST", "/v1/api-keys", { cookie, csrf: other.body.csrfToken, body: { name: "from the dashboard" } });
      assert.equal(crossed.status, 403, "another session's token does not do");
      const withToken = await request("POST", "/v1/api-keys", { cookie, csrf: body.csrfToken, body: { name: "from the dashboard" } });
      assert.equal(withToken.status, 201, JSON.stringify(withToken.body));
      const [entry] = await api.repos.audit.list(api.teamA.teamId, { action: "api_key.create", limit: 1 });
      assert.equal(entry?.actorType, "user");
      assert.equal(entry?.actorId, user.id);
      assert.equal(entry?.resourceId, withToken.body.id);

      const byKey = await request("POST", "/v1/api-keys", { key: api.teamA.key, body: { name: "by key" } });
      assert.equal(byKey.status, 201, JSON.stringify(byKey.body));
      const byKeyWithCookie = await request("POST", "/v1/api-keys", { key: api.teamB.key, cookie, body: { name: "by key, cookie ignored" } });
      assert.equal(byKeyWithCookie.status, 201, "the key decides, not the cookie");
      assert.equal((await request("GET", "/v1/teams/current", { key: api.teamB.key, cookie })).body.id, api.teamB.teamId);
    });

    test("a WebSocket upgrade signed in by cookie must come from the same site (Origin host = Host)", async () => {
      const { cookie } = await login({ email: user.email, password: user.password });
      const host = new URL(api.url).host;
      const upgrade = (headers: Record<string, string>) =>
        api.api.inject({ method: "GET", url: "/v1/sandboxes", headers: { host, cookie, upgrade: "websocket", connection: "Upgrade", ...headers } });
      const foreign = await upgrade({ origin: "https://evil.example" });
      assert.equal(foreign.statusCode, 403, foreign.body);
      assert.equal((await upgrade({})).statusCode, 403, "no Origin at all");
      assert.equal((await upgrade({ origin: "null" })).statusCode, 403);
      const same = await upgrade({ origin: `http://${host}` });
      assert.equal(same.statusCode, 200, same.body);
      const byKey = await api.api.inject({ method: "GET", url: "/v1/sandboxes", headers: { host, upgrade: "websocket", origin: "https://evil.example", "x-api-key": api.teamA.key } });
      assert.equal(byKey.statusCode, 200, "API-key requests carry no ambient credentials");
    });

    test("GET /v1/auth/session answers the session; sign-out needs the CSRF token, ends the session and clears the cookie", async () => {
      const { cookie, body } = await login({ email: user.email, password: user.password });
      const session = await request("GET", "/v1/auth/session", { cookie });
      assert.equal(session.status, 200);
      assert.deepEqual(session.body, body);
      assert.equal((await request("GET", "/v1/auth/session")).status, 401);

      const refused = await request("POST", "/v1/auth/logout", { cookie });
      assert.equal(refused.status, 403);
      assert.equal((await request("GET", "/v1/sandboxes", { cookie })).status, 200, "still signed in");
      const out = await request("POST", "/v1/auth/logout", { cookie, csrf: body.csrfToken });
      assert.equal(out.status, 204);
      assert.match(out.headers.get("set-cookie")!, /^wrenn_session=; .*Max-Age=0/);
      assert.equal((await request("GET", "/v1/auth/session", { cookie })).status, 401);
      const after = await request("GET", "/v1/sandboxes", { cookie });
      assert.equal(after.status, 401);
      assert.equal(after.body.code, "unauthenticated");
      const [entry] = await api.repos.audit.list(api.teamA.teamId, { action: "auth.logout", limit: 1 });
      assert.equal(entry?.actorId, user.id);
      assert.equal((await request("POST", "/v1/auth/logout", { cookie })).status, 204, "signing out twice is harmless");
    });

    test("an expired session is refused; an active one slides its expiry at most hourly; leaving the team ends it", async () => {
      const old = await api.repos.sessions.create({ userId: user.id, teamId: api.teamA.teamId, now: new Date(Date.now() - SESSION_TTL_MS - 1000) });
      assert.equal((await request("GET", "/v1/sandboxes", { cookie: `wrenn_session=${old.token}` })).status, 401);
      assert.equal((await request("GET", "/v1/auth/session", { cookie: `wrenn_session=${old.token}` })).status, 401);

      const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
      const stale = await api.repos.sessions.create({ userId: user.id, teamId: api.teamA.teamId, now: twoHoursAgo });
      const first = await request("GET", "/v1/sandboxes", { cookie: `wrenn_session=${stale.token}` });
      assert.equal(first.status, 200);
      assert.match(first.headers.get("set-cookie") ?? "", /^wrenn_session=.*Max-Age=604800/, "the cookie's lifetime slides too");
      const refreshed = (await api.repos.sessions.findActive(stale.token))!.session;
      assert.ok(refreshed.expiresAt.getTime() > stale.session.expiresAt.getTime() + 3600_000);
      const second = await request("GET", "/v1/sandboxes", { cookie: `wrenn_session=${stale.token}` });
      assert.equal(second.headers.get("set-cookie"), null, "no second refresh within the hour");

      const other = await api.repos.users.create({ email: `leaver-${randomBytes(3).toString("hex")}@example.com`, passwordHash: await hashPassword("leaver password 1") });
      await api.repos.teams.addMember(api.teamA.teamId, other.id, "member");
      const { cookie } = await login({ email: other.email, password: "leaver password 1" });
      assert.equal((await request("GET", "/v1/sandboxes", { cookie })).status, 200);
      await api.repos.teams.removeMember(api.teamA.teamId, other.id);
      assert.equal((await request("GET", "/v1/sandboxes", { cookie })).status, 401);
    });

    test("signing in with an API key: no user, the key's team; revoking the key ends the session", async () => {
      const { apiKey, secret } = await api.repos.apiKeys.create({ teamId: api.teamB.teamId, name: "dashboard key" });
      const answer = await login({ apiKey: secret });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.user, null);
      assert.deepEqual(answer.body.team, { id: api.teamB.teamId, name: "team-b", isAdmin: false });
      const active = await api.repos.sessions.findActive(answer.cookie.slice("wrenn_session=".length));
      assert.equal(active?.session.apiKeyId, apiKey.id);
      assert.equal((await request("GET", "/v1/teams/current", { cookie: answer.cookie })).body.id, api.teamB.teamId);
      const [entry] = await api.repos.audit.list(api.teamB.teamId, { action: "auth.login", limit: 1 });
      assert.equal(entry?.actorType, "api_key");
      assert.equal(entry?.actorId, apiKey.id);

      const bad = await login({ apiKey: "wrn_not-a-key" });
      assert.equal(bad.status, 401);
      assert.equal(bad.body.code, "unauthenticated");

      const revoked = await request("DELETE", `/v1/api-keys/${apiKey.id}`, { cookie: answer.cookie, csrf: answer.body.csrfToken });
      assert.equal(revoked.status, 204);
      assert.equal((await request("GET", "/v1/sandboxes", { cookie: answer.cookie })).status, 401);
    });

    test(`sign-in attempts are limited per client address (${LOGIN_RATE_LIMIT.max} a minute), then 429`, async () => {
      const address = newAddress();
      for (let attempt = 1; attempt <= LOGIN_RATE_LIMIT.max; attempt++) {
        assert.equal((await login({ email: user.email, password: "wrong password" }, address)).status, 401, `attempt ${attempt}`);
      }
      const limited = await login({ email: user.email, password: user.password }, address);
      assert.equal(limited.status, 429);
      assert.equal(limited.body.code, "rate_limited");
      assert.ok(limited.headers.get("retry-after"));
      assert.equal((await login({ email: user.email, password: user.password }, newAddress())).status, 200, "another address is not limited");
    });

    test("members: a team key adds a new user with a password and an existing one without; members cannot manage; the last owner stays; a removed member's session ends", async () => {
      const key = api.teamA.key;
      const email = `new-${randomBytes(3).toString("hex")}@example.com`;
      const password = `pw-${randomBytes(8).toString("hex")}`;
      assert.equal((await request("POST", "/v1/teams/current/members", { key, body: { email } })).status, 400, "a new email needs a password");
      assert.equal((await request("POST", "/v1/teams/current/members", { key, body: { email, password: "short" } })).status, 400);
      const added = await request("POST", "/v1/teams/current/members", { key, body: { email, password, role: "owner" } });
      assert.equal(added.status, 201, JSON.stringify(added.body));
      assert.deepEqual({ ...added.body, userId: undefined, createdAt: undefined }, { email, role: "owner", userId: undefined, createdAt: undefined });
      assert.equal((await request("POST", "/v1/teams/current/members", { key, body: { email, password } })).status, 409, "an existing account keeps its password");
      const listed = await request("GET", "/v1/teams/current/members", { key });
      assert.deepEqual(listed.body.map((m: Json) => m.email).sort(), [email, user.email].sort());

      // The new owner signs in; the plain member cannot manage members, with or without CSRF trouble.
      const owner = await login({ email, password });
      assert.equal(owner.status, 200);
      const member = await login({ email: user.email, password: user.password });
      const byMember = await request("POST", "/v1/teams/current/members", { cookie: member.cookie, csrf: member.body.csrfToken, body: { email: "x@example.com", password } });
      assert.equal(byMember.status, 403, JSON.stringify(byMember.body));
      const removeLastOwner = await request("DELETE", `/v1/teams/current/members/${added.body.userId}`, { cookie: owner.cookie, csrf: owner.body.csrfToken });
      assert.equal(removeLastOwner.status, 409, JSON.stringify(removeLastOwner.body));
      const removeMember = await request("DELETE", `/v1/teams/current/members/${user.id}`, { cookie: owner.cookie, csrf: owner.body.csrfToken });
      assert.equal(removeMember.status, 204, JSON.stringify(removeMember.body));
      assert.equal((await request("GET", "/v1/sandboxes", { cookie: member.cookie })).status, 401, "the removed member's session still works");
      // Back in the team for the other tests.
      await api.repos.teams.addMember(api.teamA.teamId, user.id, "member");
      await api.repos.teams.removeMember(api.teamA.teamId, added.body.userId);
    });

    test("a user changes their password: the current one is checked, the old one stops working, their other sessions end", async () => {
      const email = `pw-${randomBytes(3).toString("hex")}@example.com`;
      const first = `pw-${randomBytes(8).toString("hex")}`;
      const second = `pw-${randomBytes(8).toString("hex")}`;
      const added = await request("POST", "/v1/teams/current/members", { key: api.teamA.key, body: { email, password: first } });
      assert.equal(added.status, 201);
      const here = await login({ email, password: first });
      const elsewhere = await login({ email, password: first });
      const change = (body: unknown, session = here) => request("POST", "/v1/auth/password", { cookie: session.cookie, csrf: session.body.csrfToken, body });
      assert.equal((await change({ currentPassword: "wrong-password-1", newPassword: second })).status, 403);
      assert.equal((await change({ currentPassword: first, newPassword: "short" })).status, 400);
      assert.equal((await request("POST", "/v1/auth/password", { cookie: here.cookie, body: { currentPassword: first, newPassword: second } })).status, 403, "no CSRF token");
      assert.equal((await request("POST", "/v1/auth/password", { key: api.teamA.key, body: { currentPassword: first, newPassword: second } })).status, 403, "an API key has no password");
      assert.equal((await change({ currentPassword: first, newPassword: second })).status, 204);
      assert.equal((await request("GET", "/v1/auth/session", { cookie: here.cookie })).status, 200, "this session goes on");
      assert.equal((await request("GET", "/v1/auth/session", { cookie: elsewhere.cookie })).status, 401, "the other session ended");
      assert.equal((await login({ email, password: first })).status, 401);
      assert.equal((await login({ email, password: second })).status, 200);
      await api.repos.teams.removeMember(api.teamA.teamId, added.body.userId);
    });

    test("the routes are in /openapi.json", async () => {
      const document = await request("GET", "/openapi.json");
      for (const route of ["/v1/auth/login", "/v1/auth/session", "/v1/auth/logout"]) assert.ok(document.body.paths[route], route);
      assert.ok(document.body.components.schemas.DashboardSession);
    });

    test("bootstrap makes admin@wrenn.local in the admin team with a saved 20-character password, the same on every start", async () => {
      const dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-dauth-"));
      try {
        const logger = pino({ level: "silent" });
        const first = await bootstrapAdmin(api.repos, dataDir, logger);
        const file = path.join(dataDir, ADMIN_PASSWORD_FILE);
        const saved = await readFile(file, "utf8");
        assert.deepEqual(first.dashboard, { email: ADMIN_USER_EMAIL, password: saved.trim() });
        assert.match(first.dashboard.password!, /^[A-Za-z0-9]{20}$/);
        assert.equal((await stat(file)).mode & 0o777, 0o600);
        const second = await bootstrapAdmin(api.repos, dataDir, logger);
        assert.deepEqual(second, first);
        assert.equal(await readFile(file, "utf8"), saved, "the same password file");

        const answer = await login({ email: ADMIN_USER_EMAIL, password: first.dashboard.password });
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.deepEqual(answer.body.team, { id: first.team.id, name: "admin", isAdmin: true });
        assert.equal((await request("GET", "/v1/teams", { cookie: answer.cookie })).status, 200, "an admin team's user is an admin");
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  });
}
