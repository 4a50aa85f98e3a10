-- The platform team owns the templates every team may use (PLATFORM_TEAM_ID in src/db/schema.ts).
INSERT INTO "teams" ("id", "name", "slug", "is_admin")
VALUES ('00000000-0000-0000-0000-000000000000', 'Platform', 'platform', true)
ON CONFLICT ("id") DO NOTHING;
