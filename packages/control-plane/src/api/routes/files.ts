// /v1/sandboxes/:id/files…: upload, download, list, stat, mkdir, move, remove (being written).
import type { RouteModule } from "../deps.js";

export const fileRoutes: RouteModule = async () => {};
