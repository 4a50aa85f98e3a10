// drizzle-kit's settings: `npm run db:generate -w @wrenn/control-plane` writes a new migration after a schema change.
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./src/db/schema.ts",
  out: "./migrations",
});
