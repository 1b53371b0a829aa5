// JSON merge patch (RFC 7386) for live results (the worker's `update` frame): a patch object's members replace
// the target's, `null` removes one, a nested object merges into the member it names, anything else (an array
// included) replaces it whole. Pure: the target is never changed (a state handed to the hub is shared by
// every stream), the result shares the target's untouched branches.
//
// The result is put in jsonb's key order (shorter keys first, then by their UTF-8 bytes), which is how the
// row gives it back once written behind: a live state and the same state read from Postgres are the same JSON.

type Json = unknown

const isObject = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v)

export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return patch
  const out: Record<string, Json> = isObject(target) ? { ...target } : {}
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key]
    else out[key] = mergePatch(out[key], value)
  }
  return out
}

const utf8 = new TextEncoder()

/** jsonb's order of object keys: by length in bytes, then bytewise. */
function compareKeys(a: string, b: string): number {
  const x = utf8.encode(a)
  const y = utf8.encode(b)
  if (x.length !== y.length) return x.length - y.length
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!
  return 0
}

/** The value with every object's keys in jsonb's order (arrays keep theirs). */
export function inJsonbOrder(value: Json): Json {
  if (Array.isArray(value)) return value.map(inJsonbOrder)
  if (!isObject(value)) return value
  const out: Record<string, Json> = {}
  for (const key of Object.keys(value).sort(compareKeys)) out[key] = inJsonbOrder(value[key])
  return out
}
