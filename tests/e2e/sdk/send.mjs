// Sends calls with a real Node SDK, unchanged but for its host, and prints what it sent.
//
// stdin: {"sdk": "segment" | "rudderstack", "host": URL, "writeKey": KEY, "calls": [...]}
// where each call is {"type": "track" | "page" | "screen" | "identify" | "alias" | "group",
// ...the SDK's own parameters}. stdout: {"messageIds": [...]} in the order of the calls, the
// ids the SDK gave them. Exit 1 if the SDK reported a failed delivery.
import { createRequire } from 'node:module'
import { gunzipSync } from 'node:zlib'

const require = createRequire(import.meta.url)

async function readStdin() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

// @segment/analytics-node: each call's callback gets its context, whose event is what the
// SDK batches and posts to HOST/v1/batch.
async function segment({ host, writeKey, calls }) {
  const { Analytics } = require('@segment/analytics-node')
  const analytics = new Analytics({ writeKey, host, flushInterval: 200, maxRetries: 5 })
  const errors = []
  analytics.on('error', (err) => errors.push(String(err?.reason ?? err?.code ?? err)))
  const sent = calls.map(
    ({ type, ...params }) =>
      new Promise((resolve) => {
        analytics[type](params, (err, ctx) => {
          if (err) errors.push(String(err?.reason ?? err))
          resolve(ctx?.event?.messageId ?? null)
        })
      })
  )
  await analytics.closeAndFlush({ timeout: 20000 })
  return { messageIds: await Promise.all(sent), errors }
}

// @rudderstack/rudder-sdk-node: the callback gets the posted batch (gzip, its default),
// which holds the ids the SDK gave.
async function rudderstack({ host, writeKey, calls }) {
  const Analytics = require('@rudderstack/rudder-sdk-node')
  const errors = []
  const client = new Analytics(writeKey, {
    dataPlaneUrl: host,
    flushAt: 100,
    flushInterval: 200,
    retryCount: 3,
    logLevel: 'error',
    errorHandler: (err) => errors.push(String(err?.code ?? err?.message ?? err)),
  })
  const batches = []
  const sent = calls.map(
    ({ type, ...params }) =>
      new Promise((resolve) => {
        client[type](params, (err, data) => {
          if (err) errors.push(String(err?.message ?? err))
          else batches.push(Buffer.isBuffer(data) ? JSON.parse(gunzipSync(data)) : data)
          resolve()
        })
      })
  )
  await new Promise((resolve) => client.flush(resolve))
  await Promise.all(sent)
  // One batch may hold several calls: every call's callback gets it, and the first call
  // (sent alone: the SDK flushes at once on its first call) has its own.
  const ids = new Map()
  for (const batch of batches) for (const m of batch.batch) ids.set(m.messageId, m)
  const messageIds = calls.map((call) => {
    const m = [...ids.values()].find((m) => m.type === call.type && same(m, call))
    return m ? m.messageId : null
  })
  return { messageIds, errors }
}

// A posted message is a call's when the identifiers and the name the test gave match.
function same(message, call) {
  return ['anonymousId', 'userId', 'event', 'name', 'previousId', 'groupId'].every(
    (k) => call[k] === undefined || message[k] === call[k]
  )
}

const spec = await readStdin()
const send = { segment, rudderstack }[spec.sdk]
if (!send) {
  console.error(`unknown sdk ${spec.sdk}`)
  process.exit(2)
}
const result = await send(spec)
process.stdout.write(JSON.stringify(result) + '\n')
process.exit(result.errors.length ? 1 : 0)
