# syntax=docker/dockerfile:1
# Build: one standalone executable (bun build --compile) with the migrations and the dashboard inside.
FROM oven/bun:1.4 AS build
WORKDIR /app
# bunfig.toml holds the [install] settings, so it comes in with the manifests, before the install.
COPY package.json package-lock.json bunfig.toml ./
# The npm workspace's package manifests come with the root's: the lock file lists them.
COPY packages/client/package.json ./packages/client/
COPY packages/dashboard/package.json ./packages/dashboard/
# The locked versions (bun migrates package-lock.json; --frozen-lockfile fails if it disagrees with
# package.json), runtime dependencies only: the `bun` devDependency installed with --ignore-scripts is a
# stub that exits 1, and `bun run` puts node_modules/.bin first on PATH, so with the devDependencies
# `bun run build` would run that stub instead of the image's bun.
RUN bun install --ignore-scripts --frozen-lockfile --production
COPY tsconfig.json ./
COPY sql ./sql
COPY src ./src
# The console (packages/dashboard) is bundled into the executable, on the client package's sources.
COPY packages/client/src ./packages/client/src
COPY packages/dashboard/build.ts ./packages/dashboard/
COPY packages/dashboard/src ./packages/dashboard/src
RUN bun run build

# Run: a slim image with the executable only, as a non-root user.
# The executable needs a Postgres server (DATABASE_URL): the embedded PGlite is not available inside it.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin processes
COPY --from=build /app/dist/processes-server /usr/local/bin/processes-server
USER 10001
# Every interface: the container's network is its boundary (the server's own default is the loopback only
# for the embedded database).
ENV HOST=0.0.0.0
ENV PORT=3000
# /metrics on a port of its own, for a Prometheus on the container's network: publish PORT only (`-p 3000:3000`),
# never METRICS_PORT to the outside. PORT serves it too unless METRICS_ON_API_PORT=off; METRICS_TOKEN makes it
# need a bearer token on both.
ENV METRICS_HOST=0.0.0.0
ENV METRICS_PORT=9464
EXPOSE 3000 9464
# No curl in the image: the executable checks its own /health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["/usr/local/bin/processes-server", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/processes-server"]
CMD ["serve"]
