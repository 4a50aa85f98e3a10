// Every route module of the API, in one list: add a module here and it is served, authenticated,
// audited and documented in /openapi.json.
import type { RouteModules } from "../deps.js";
import { apiKeyRoutes } from "./api-keys.js";
import { auditRoutes } from "./audit.js";
import { authRoutes } from "./auth.js";
import { fileRoutes } from "./files.js";
import { healthRoutes } from "./health.js";
import { hostRoutes } from "./hosts.js";
import { memberRoutes } from "./members.js";
import { sandboxLogRoutes } from "./sandbox-logs.js";
import { sandboxRoutes } from "./sandboxes.js";
import { teamRoutes } from "./teams.js";
import { templateRoutes } from "./templates.js";
import { terminalRoutes } from "./terminal.js";
import { usageRoutes } from "./usage.js";

export const routeModules: RouteModules = {
  v1: [authRoutes, teamRoutes, memberRoutes, apiKeyRoutes, auditRoutes, usageRoutes, sandboxRoutes, sandboxLogRoutes, fileRoutes, terminalRoutes, templateRoutes, hostRoutes],
  root: [healthRoutes],
};
