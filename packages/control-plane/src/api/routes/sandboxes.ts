// /v1/sandboxes: lifecycle, exec, metrics (being written).
import type { RouteModule } from "../deps.js";

export const sandboxRoutes: RouteModule = async () => {};
