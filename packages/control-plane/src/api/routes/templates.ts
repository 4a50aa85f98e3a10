// /v1/templates: list, get, snapshot, build with logs, delete (being written).
import type { RouteModule } from "../deps.js";

export const templateRoutes: RouteModule = async () => {};
