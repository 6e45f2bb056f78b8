import { defineConfig } from 'drizzle-kit';

// `npm run db:generate` writes SQL migrations into migrations/ from the schema.
// Generating needs no database; applying happens at start-up (src/db/migrate.ts).
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './migrations',
});
