# Lifeline service image. Give it DATABASE_URL in production; without one it starts the
# embedded PostgreSQL (data in /app/.lifeline, mount a volume there to keep it).
FROM node:24-slim

WORKDIR /app
ENV NODE_ENV=production \
    PORT=3000 \
    HOST=0.0.0.0

COPY package.json package-lock.json ./
# patches/ holds the postgres.js fix that `postinstall` (patch-package) applies: it must be there
# before the install, and patch-package is a production dependency for that reason.
COPY patches ./patches
# Production dependencies only; the image's own Node 24 runs the service (the `node` npm
# package is a dev dependency that brings Node 24 to development machines).
RUN npm ci --omit=dev && npm cache clean --force

COPY src ./src
COPY migrations ./migrations
COPY emails ./emails

RUN mkdir -p /app/.lifeline && chown -R node:node /app/.lifeline
USER node

EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"
CMD ["node", "src/server.ts"]
