// Where the worker's WebSocket class comes from when the runtime has none (Node 18–21): the `ws` package, an
// optional peer dependency, loaded by the SDK itself (a dynamic import; in the CommonJS build, a require).

/** Said when neither a global WebSocket nor the `ws` package is there. */
export const NO_WEBSOCKET =
  'no WebSocket in this runtime (Node before 22 has no global one): npm install ws (the SDK loads it by itself), or pass options.WebSocket'

// A variable, so bundlers for the browser (which has a global WebSocket) neither resolve nor bundle `ws`.
const WS_PACKAGE = 'ws'

/** The `ws` package's WebSocket class; rejects with a TypeError saying `npm install ws` when it is not installed. */
export async function loadWebSocket<T>(): Promise<T> {
  let loaded: { WebSocket?: T; default?: T | { WebSocket?: T } }
  try {
    loaded = await import(/* webpackIgnore: true */ /* @vite-ignore */ WS_PACKAGE)
  } catch (error) {
    const code = (error as { code?: string }).code
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') throw new TypeError(NO_WEBSOCKET)
    throw error
  }
  const found = loaded.WebSocket ?? (loaded.default as { WebSocket?: T } | undefined)?.WebSocket ?? (loaded.default as T | undefined)
  if (typeof found !== 'function') throw new TypeError(`${NO_WEBSOCKET} (the installed ws has no WebSocket class)`)
  return found
}
