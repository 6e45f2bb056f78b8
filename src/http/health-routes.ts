import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import { migrationsApplied } from '../db/migrate.ts';

export async function healthRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  app.get('/healthz', { schema: { summary: 'The process is up', tags: ['operations'] } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    { schema: { summary: 'The database is reachable and every migration is applied', tags: ['operations'] } },
    async (_request, reply) => {
      try {
        const applied = await migrationsApplied(deps.sql);
        if (!applied) return reply.code(503).send({ status: 'not_ready', reason: 'migrations pending' });
        return { status: 'ready' };
      } catch {
        return reply.code(503).send({ status: 'not_ready', reason: 'database unreachable' });
      }
    },
  );
}
