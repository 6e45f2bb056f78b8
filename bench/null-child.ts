// Load-generator check: a node:http server that reads the body and answers 200 with no work,
// in its own process. What the load generator reaches against it is its own ceiling on this
// machine (both processes share the 2 cores, as in the real runs).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { onStopRequest } from './lib/child.ts';

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"received":true}');
  });
});
server.keepAliveTimeout = 60_000;
onStopRequest(() => new Promise<void>((resolve) => server.close(() => resolve())));
server.listen(0, '127.0.0.1', () => process.send!({ type: 'ready', port: (server.address() as AddressInfo).port }));
