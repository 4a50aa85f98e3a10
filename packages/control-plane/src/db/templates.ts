// The template catalogue: platform templates (all-zeros team) every team sees, plus each team's own.
import { and, asc, eq, inArray, sql } from "drizzle-orm";
import type { Db } from "./database.js";
import { PLATFORM_TEAM_ID, templates, type Template, type TemplateKind } from "./schema.js";
import { catalogVersion } from "./catalog-version.js";

export interface NewTemplate {
  /** Chosen by the caller when the name on hosts' disks is derived from it. */
  id?: string;
  teamId: string;
  name: string;
  kind: TemplateKind;
  hostId?: string | null;
  hostTemplateName?: string | null;
  sizeBytes?: number;
  metadata?: Record<string, unknown>;
}

export class TemplateRepository {
  constructor(private readonly db: Db) {}

  /** Fails with a unique violation when the team already has a template of that name. */
  async create(template: NewTemplate): Promise<Template> {
    const [row] = await this.db.insert(templates).values(template).returning();
    catalogVersion.templatesChanged();
    return row!;
  }

  /** The team's own template of that name. */
  async get(teamId: string, name: string): Promise<Template | undefined> {
    const [row] = await this.db
      .select()
      .from(templates)
      .where(and(eq(templates.teamId, teamId), eq(templates.name, name)));
    return row;
  }

  /** The template a team gets by `name`: its own if it has one, else the platform's. */
  async findVisible(teamId: string, name: string): Promise<Template | undefined> {
    const [row] = await this.db
      .select()
      .from(templates)
      .where(and(eq(templates.name, name), inArray(templates.teamId, [teamId, PLATFORM_TEAM_ID])))
      .orderBy(sql`${templates.teamId} = ${PLATFORM_TEAM_ID}`)
      .limit(1);
    return row;
  }

  /** Platform templates and the team's own, by name. */
  async listVisible(teamId: string): Promise<Template[]> {
    return this.db
      .select()
      .from(templates)
      .where(inArray(templates.teamId, [teamId, PLATFORM_TEAM_ID]))
      .orderBy(asc(templates.name), sql`${templates.teamId} = ${PLATFORM_TEAM_ID}`);
  }

  async getById(id: string): Promise<Template | undefined> {
    const [row] = await this.db.select().from(templates).where(eq(templates.id, id));
    return row;
  }

  /** Adds a platform template a host reported, unless the catalogue has it; returns whether it was added. */
  async ensurePlatform(name: string, sizeBytes: number): Promise<boolean> {
    const rows = await this.db
      .insert(templates)
      .values({ teamId: PLATFORM_TEAM_ID, name, kind: "platform", sizeBytes })
      .onConflictDoNothing({ target: [templates.teamId, templates.name] })
      .returning({ id: templates.id });
    if (rows.length > 0) catalogVersion.templatesChanged();
    return rows.length > 0;
  }

  /** Records the host whose disk holds the template. */
  async setHost(id: string, hostId: string | null): Promise<Template | undefined> {
    const [row] = await this.db.update(templates).set({ hostId }).where(eq(templates.id, id)).returning();
    catalogVersion.templatesChanged();
    return row;
  }

  async setSize(id: string, sizeBytes: number): Promise<Template | undefined> {
    const [row] = await this.db.update(templates).set({ sizeBytes }).where(eq(templates.id, id)).returning();
    return row;
  }

  /**
   * Deletes the template `teamId` owns. Platform templates are deleted only by naming the platform
   * team, which the API allows admins alone (seed 003's fix).
   */
  async delete(teamId: string, name: string): Promise<Template | undefined> {
    const [row] = await this.db
      .delete(templates)
      .where(and(eq(templates.teamId, teamId), eq(templates.name, name)))
      .returning();
    catalogVersion.templatesChanged();
    return row;
  }
}
