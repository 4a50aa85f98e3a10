// /v1/hosts (admin): register, list, drain, delete (being written).
import type { RouteModule } from "../deps.js";

export const hostRoutes: RouteModule = async () => {};
