// Email provider metrics: request latency and outcomes (ok, 429, 5xx, timeout…), observed by
// wrapping the transport. Its registry belongs to one service (created in service.ts, passed to
// the app so GET /metrics shows it); never prom-client's global registry.
import { Counter, Histogram, Registry } from 'prom-client';
import type { Clock } from '../clock.ts';
import type { EmailTransport } from '../email/transport.ts';

export interface ProviderMetrics {
  registry: Registry;
  instrument(transport: EmailTransport): EmailTransport;
}

export function createProviderMetrics(clock: Clock): ProviderMetrics {
  const registry = new Registry();
  const latency = new Histogram({
    name: 'lifeline_email_provider_request_duration_seconds',
    help: 'Email provider request duration (one request = one email or a batch)',
    labelNames: ['transport'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
    registers: [registry],
  });
  const outcomes = new Counter({
    name: 'lifeline_email_provider_requests_total',
    help: 'Email provider requests by outcome: ok, or the HTTP status (429 = rate limited), or the error code (timeout…)',
    labelNames: ['transport', 'outcome'] as const,
    registers: [registry],
  });
  return {
    registry,
    instrument(transport) {
      return {
        name: transport.name,
        async send(emails, idempotencyKey) {
          const started = clock.now().getTime();
          try {
            const result = await transport.send(emails, idempotencyKey);
            const outcome = result.ok ? 'ok' : result.status !== null ? String(result.status) : (result.code ?? 'error');
            outcomes.inc({ transport: transport.name, outcome });
            return result;
          } catch (err) {
            outcomes.inc({ transport: transport.name, outcome: 'exception' });
            throw err;
          } finally {
            latency.observe({ transport: transport.name }, Math.max(0, clock.now().getTime() - started) / 1000);
          }
        },
      };
    },
  };
}
