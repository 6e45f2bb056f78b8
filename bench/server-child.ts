// A Lifeline service for the benchmark, in its own process: startService() with the
// configuration from the environment (run.ts sets DATABASE_URL, ROLE, secrets, LOG_LEVEL),
// listening on 127.0.0.1 on a free port. Reports {type:'ready', port} over IPC.
import type { AddressInfo } from 'node:net';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { startService } from '../src/service.ts';
import { onStopRequest } from './lib/child.ts';

try {
  const config = loadConfig(process.env);
  const service = await startService({ config, logger: createLogger(config.logLevel) });
  onStopRequest(() => service.stop());
  let port = 0;
  if (service.app) {
    await service.app.listen({ host: '127.0.0.1', port: 0 });
    port = (service.app.server.address() as AddressInfo).port;
  }
  process.send!({ type: 'ready', port });
} catch (err) {
  process.send!({ type: 'error', error: err instanceof Error ? err.stack ?? err.message : String(err) });
  process.exit(1);
}
