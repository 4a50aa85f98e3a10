// /v1/teams: the caller's team, and (admin teams only) every team and new ones.
import { z } from "zod";
import { isUniqueViolation } from "../../db/errors.js";
import { createRepositories } from "../../db/repositories.js";
import type { Team } from "../../db/schema.js";
import { WrennError } from "../../errors.js";
import { requireAdmin } from "../auth.js";
import type { RouteModule } from "../deps.js";
import { errorResponses } from "../error-responses.js";
import { ApiKeyName, CreatedApiKey, toApiKeyView } from "./api-keys.js";

export const TeamView = z
  .object({
    id: z.uuid(),
    name: z.string(),
    slug: z.string(),
    isAdmin: z.boolean(),
    createdAt: z.iso.datetime(),
  })
  .meta({ id: "Team" });

export const toTeamView = (team: Team): z.infer<typeof TeamView> => ({
  id: team.id,
  name: team.name,
  slug: team.slug,
  isAdmin: team.isAdmin,
  createdAt: team.createdAt.toISOString(),
});

const Slug = z
  .string()
  .regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, "lower-case letters, digits and inner dashes, at most 63");

const CreateTeamBody = z.strictObject({
  name: z.string().trim().min(1).max(100),
  slug: Slug.optional().meta({ description: "Unique short name; derived from the name when absent" }),
  isAdmin: z.boolean().default(false),
  apiKeyName: ApiKeyName.default("first key"),
});

const slugFrom = (name: string) =>
  name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63)
    .replace(/-+$/, "");

export const teamRoutes: RouteModule = async (app, { deps }) => {
  const { repos, database } = deps;

  app.get(
    "/teams/current",
    {
      schema: {
        tags: ["teams"],
        summary: "The team the API key belongs to",
        operationId: "getCurrentTeam",
        response: { 200: TeamView, ...errorResponses },
      },
    },
    async (request) => toTeamView(request.auth.team),
  );

  app.get(
    "/teams",
    {
      preHandler: requireAdmin,
      schema: {
        tags: ["teams"],
        summary: "Every team (admin)",
        operationId: "listTeams",
        response: { 200: z.array(TeamView), ...errorResponses },
      },
    },
    async () => (await repos.teams.list()).map(toTeamView),
  );

  app.post(
    "/teams",
    {
      preHandler: requireAdmin,
      config: { auditAction: "team.create" },
      schema: {
        tags: ["teams"],
        summary: "Create a team and its first API key (admin); the key's secret is shown only once",
        operationId: "createTeam",
        body: CreateTeamBody,
        response: { 201: z.object({ team: TeamView, apiKey: CreatedApiKey }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const { name, isAdmin, apiKeyName } = request.body;
      const slug = request.body.slug ?? slugFrom(name);
      if (!slug) throw new WrennError("invalid_argument", "body.slug: the name has no letters or digits to make a slug of; give a slug");
      const taken = () => new WrennError("conflict", `A team with slug "${slug}" already exists; choose another slug.`);
      if (await repos.teams.getBySlug(slug)) throw taken();
      const { team, apiKey, secret, e2bKey } = await database.db
        .transaction(async (tx) => {
          const inTransaction = createRepositories(tx);
          const team = await inTransaction.teams.create({ name, slug, isAdmin });
          return { team, ...(await inTransaction.apiKeys.create({ teamId: team.id, name: apiKeyName })) };
        })
        .catch((error: unknown) => {
          throw isUniqueViolation(error) ? taken() : error;
        });
      request.auditResource = { type: "team", id: team.id };
      reply.code(201);
      return { team: toTeamView(team), apiKey: { ...toApiKeyView(apiKey), secret, e2bKey } };
    },
  );
};
