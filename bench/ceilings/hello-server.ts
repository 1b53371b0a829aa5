// Reference ceiling for `bench rest`: the fastest thing Bun.serve can answer on this machine.
Bun.serve({
  port: Number(process.env.PORT ?? 0),
  hostname: '127.0.0.1',
  development: false,
  fetch: () => new Response('Hello, world!'),
})
