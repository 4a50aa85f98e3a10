// /v1/teams/current/members: who may sign in to the team's dashboard. Managed by the team's owners
// and admins (signed in), or with any API key of the team (a key is the whole team's credential).
// A new email becomes a user with the password given; an existing user is added as is (their
// password stays theirs). The last owner cannot be removed; a removed member's sessions for the
// team end at once (db/sessions.ts checks membership on every request).
import type { FastifyRequest } from "fastify";
import { z } from "zod";
import { isUniqueViolation } from "../../db/errors.js";
import { TEAM_ROLES, type TeamMember } from "../../db/schema.js";
import { WrennError } from "../../errors.js";
import type { RouteModule } from "../deps.js";
import { errorResponses } from "../error-responses.js";
import { hashPassword, PASSWORD_MIN_LENGTH } from "../passwords.js";

export const Member = z
  .object({
    userId: z.uuid(),
    email: z.string(),
    role: z.enum(TEAM_ROLES),
    createdAt: z.iso.datetime(),
  })
  .meta({ id: "TeamMember" });

const toMemberView = (member: TeamMember & { email: string }): z.infer<typeof Member> => ({
  userId: member.userId,
  email: member.email,
  role: member.role,
  createdAt: member.createdAt.toISOString(),
});

export const NewPassword = z
  .string()
  .min(PASSWORD_MIN_LENGTH, `at least ${PASSWORD_MIN_LENGTH} characters`)
  .max(1024);

const AddMemberBody = z
  .strictObject({
    email: z.email().max(320),
    password: NewPassword.optional().meta({ description: "Required when the email is new: the new user's password" }),
    role: z.enum(TEAM_ROLES).default("member"),
  })
  .meta({ id: "AddTeamMemberRequest" });

export const memberRoutes: RouteModule = async (app, { deps }) => {
  const { repos } = deps;

  /** Owners and admins of the team (signed in), and the team's API keys, manage its members. */
  async function requireManager(request: FastifyRequest): Promise<void> {
    const { userId, teamId } = request.auth;
    if (!userId) return;
    const membership = await repos.teams.getMembership(teamId, userId);
    if (membership?.role !== "owner" && membership?.role !== "admin") {
      throw new WrennError("forbidden", "Only the team's owners and admins manage its members.");
    }
  }

  app.get(
    "/teams/current/members",
    {
      schema: {
        tags: ["teams"],
        summary: "The team's dashboard users",
        operationId: "listTeamMembers",
        response: { 200: z.array(Member), ...errorResponses },
      },
    },
    async (request) => (await repos.teams.listMembersWithEmail(request.auth.teamId)).map(toMemberView),
  );

  app.post(
    "/teams/current/members",
    {
      config: { auditAction: "team.member.add" },
      preHandler: requireManager,
      schema: {
        tags: ["teams"],
        summary: "Add a dashboard user to the team (a new email becomes a user with the password given)",
        operationId: "addTeamMember",
        body: AddMemberBody,
        response: { 201: Member, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { email, password, role } = request.body;
      const { teamId, userId } = request.auth;
      if (role === "owner" && userId && (await repos.teams.getMembership(teamId, userId))?.role !== "owner") {
        throw new WrennError("forbidden", "Only an owner can make another owner.");
      }
      let user = await repos.users.findByEmail(email);
      if (user && password !== undefined) {
        throw new WrennError("conflict", `${email.toLowerCase()} already has an account; add it without a password (its own stays).`);
      }
      if (!user) {
        if (password === undefined) throw new WrennError("invalid_argument", `${email.toLowerCase()} is new: give the password it will sign in with.`);
        try {
          user = await repos.users.create({ email, passwordHash: await hashPassword(password) });
        } catch (error) {
          // Someone made the same account at the same moment.
          if (!isUniqueViolation(error)) throw error;
          throw new WrennError("conflict", `${email.toLowerCase()} already has an account; add it without a password.`);
        }
      }
      if (await repos.teams.getMembership(teamId, user.id)) throw new WrennError("conflict", `${user.email} is already a member of this team.`);
      const member = await repos.teams.addMember(teamId, user.id, role);
      request.auditResource = { type: "user", id: user.id };
      return reply.code(201).send(toMemberView({ ...member, email: user.email }));
    },
  );

  app.delete(
    "/teams/current/members/:userId",
    {
      config: { auditAction: "team.member.remove" },
      preHandler: requireManager,
      schema: {
        tags: ["teams"],
        summary: "Remove a dashboard user from the team (their sessions for it end at once)",
        operationId: "removeTeamMember",
        params: z.object({ userId: z.uuid() }),
        response: { 204: z.null().meta({ description: "Removed" }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const { teamId } = request.auth;
      const members = await repos.teams.listMembers(teamId);
      const member = members.find((m) => m.userId === request.params.userId);
      if (!member) throw new WrennError("not_found", `user ${request.params.userId} is not a member of this team`);
      if (member.role === "owner" && members.filter((m) => m.role === "owner").length === 1) {
        throw new WrennError("failed_precondition", "The team's last owner cannot be removed; make another member an owner first.");
      }
      await repos.teams.removeMember(teamId, member.userId);
      request.auditResource = { type: "user", id: member.userId };
      return reply.code(204).send(null);
    },
  );
};
