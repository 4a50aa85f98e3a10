// Teams and who belongs to them.
import { and, eq } from "drizzle-orm";
import type { Db } from "./database.js";
import { PLATFORM_TEAM_ID, teamMembers, teams, users, type Team, type TeamMember, type TeamRole } from "./schema.js";

export class TeamRepository {
  constructor(private readonly db: Db) {}

  async create(team: { name: string; slug: string; isAdmin?: boolean }): Promise<Team> {
    const [row] = await this.db.insert(teams).values(team).returning();
    return row!;
  }

  /** A new team with `userId` as its owner, both or neither. */
  async createWithOwner(team: { name: string; slug: string }, userId: string): Promise<Team> {
    return this.db.transaction(async (tx) => {
      const [row] = await tx.insert(teams).values(team).returning();
      await tx.insert(teamMembers).values({ teamId: row!.id, userId, role: "owner" });
      return row!;
    });
  }

  async get(id: string): Promise<Team | undefined> {
    const [row] = await this.db.select().from(teams).where(eq(teams.id, id));
    return row;
  }

  async getBySlug(slug: string): Promise<Team | undefined> {
    const [row] = await this.db.select().from(teams).where(eq(teams.slug, slug));
    return row;
  }

  /** Every team, oldest first (admin listings). */
  async list(): Promise<Team[]> {
    return this.db.select().from(teams).orderBy(teams.createdAt, teams.id);
  }

  /** The team that owns platform templates. */
  async getPlatformTeam(): Promise<Team> {
    const team = await this.get(PLATFORM_TEAM_ID);
    if (!team) throw new Error("platform team missing: migrations not applied");
    return team;
  }

  /** Deletes the team and, by cascade, its members, keys, templates, sandboxes and usage. */
  async delete(id: string): Promise<boolean> {
    if (id === PLATFORM_TEAM_ID) return false;
    const rows = await this.db.delete(teams).where(eq(teams.id, id)).returning({ id: teams.id });
    return rows.length > 0;
  }

  /** Adds the user, or changes the role of a user already in the team. */
  async addMember(teamId: string, userId: string, role: TeamRole): Promise<TeamMember> {
    const [row] = await this.db
      .insert(teamMembers)
      .values({ teamId, userId, role })
      .onConflictDoUpdate({ target: [teamMembers.teamId, teamMembers.userId], set: { role } })
      .returning();
    return row!;
  }

  async removeMember(teamId: string, userId: string): Promise<boolean> {
    const rows = await this.db
      .delete(teamMembers)
      .where(and(eq(teamMembers.teamId, teamId), eq(teamMembers.userId, userId)))
      .returning({ userId: teamMembers.userId });
    return rows.length > 0;
  }

  async getMembership(teamId: string, userId: string): Promise<TeamMember | undefined> {
    const [row] = await this.db
      .select()
      .from(teamMembers)
      .where(and(eq(teamMembers.teamId, teamId), eq(teamMembers.userId, userId)));
    return row;
  }

  async listMembers(teamId: string): Promise<TeamMember[]> {
    return this.db.select().from(teamMembers).where(eq(teamMembers.teamId, teamId)).orderBy(teamMembers.createdAt);
  }

  /** The team's members with their emails, oldest first. */
  async listMembersWithEmail(teamId: string): Promise<Array<TeamMember & { email: string }>> {
    const rows = await this.db
      .select({ member: teamMembers, email: users.email })
      .from(teamMembers)
      .innerJoin(users, eq(users.id, teamMembers.userId))
      .where(eq(teamMembers.teamId, teamId))
      .orderBy(teamMembers.createdAt);
    return rows.map(({ member, email }) => ({ ...member, email }));
  }

  /** The teams a user belongs to, with the user's role in each. */
  async listForUser(userId: string): Promise<Array<Team & { role: TeamRole }>> {
    const rows = await this.db
      .select({ team: teams, role: teamMembers.role })
      .from(teamMembers)
      .innerJoin(teams, eq(teams.id, teamMembers.teamId))
      .where(eq(teamMembers.userId, userId))
      .orderBy(teams.createdAt);
    return rows.map(({ team, role }) => ({ ...team, role }));
  }
}
