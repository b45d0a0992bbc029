// posthog-js feature flags in Debian's Chromium against a hogflare server.
//
//   node flags_browser.mjs --host http://127.0.0.1:8080 --token phc_x --run-id abc
//
// The page is served from its own port, so config.js, /flags and the events all cross origins.
// posthog-js boots from config.js, loads its flags, reads them (isFeatureEnabled, getFeatureFlag,
// getFeatureFlagPayload), identifies the visitor with a person property that a flag targets, and
// reloads its flags. Prints one JSON object: what the page saw at each step, hogflare's own answer
// for the visitor before identify, the requests the page made to hogflare, and any errors.
import { args, initPosthog, launchChromium, servePage } from './harness.mjs'

const host = args.host
const token = args.token
const runId = args['run-id'] ?? String(Date.now())
const userId = `js-flags-user-${runId}`

const { server, pageUrl } = await servePage('hogflare flags page', '<p>flags</p>')
const browser = await launchChromium()
const context = await browser.newContext()
const tab = await context.newPage()
const pageErrors = []
const requests = []
const failed = []
const inFlight = new Set()
const toHogflare = (request) => request.url().startsWith(host)
tab.on('pageerror', (err) => pageErrors.push(String(err)))
tab.on('request', (request) => toHogflare(request) && inFlight.add(request))
tab.on('requestfinished', async (request) => {
    inFlight.delete(request)
    if (!toHogflare(request)) return
    const response = await request.response()
    const path = new URL(request.url()).pathname
    requests.push({ method: request.method(), path, status: response?.status() ?? null })
})
tab.on('requestfailed', (request) => {
    inFlight.delete(request)
    if (toHogflare(request)) failed.push({ url: request.url(), error: request.failure()?.errorText ?? null })
})

// Wait until what posthog-js queued has gone out: one flush interval, then nothing in flight.
async function settle(flushMs = 200) {
    await tab.waitForTimeout(flushMs * 2)
    while (inFlight.size > 0) await tab.waitForTimeout(50)
    await tab.waitForTimeout(100)
}

await tab.goto(pageUrl)

// Boot: the first onFeatureFlags call is the flags loaded from /flags after config.js.
const anonId = await initPosthog(tab, { host, token, runId })

const booted = await tab.waitForFunction(() => window.flagCalls.length > 0, null, { timeout: 15000 }).then(() => true, () => false)

async function askFlags(distinctId) {
    const response = await fetch(`${host}/flags/?v=2`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token, distinct_id: distinctId }),
    })
    return response.ok ? await response.json() : { status: response.status }
}

function read() {
    return tab.evaluate(() => {
        const ph = window.posthog
        return {
            distinct_id: ph.get_distinct_id(),
            on: ph.isFeatureEnabled('js-on') ?? null,
            variant: ph.getFeatureFlag('js-variant') ?? null,
            pro: ph.isFeatureEnabled('js-pro') ?? null,
            pro_variant: ph.getFeatureFlag('js-pro-variant') ?? null,
            off: ph.isFeatureEnabled('js-off') ?? null,
            inactive: ph.getFeatureFlag('js-inactive') ?? null,
            on_payload: ph.getFeatureFlagPayload('js-on') ?? null,
            variant_payload: ph.getFeatureFlagPayload('js-variant') ?? null,
            pro_payload: ph.getFeatureFlagPayload('js-pro') ?? null,
            calls: window.flagCalls.length,
        }
    })
}

const before = booted ? await read() : null
// hogflare's own answer for the visitor at this moment, before identify gives it a person.
const serverBefore = await askFlags(anonId)
await settle()

// identify with a person property that js-pro targets, then reload: the flag flips on.
const callsBefore = await tab.evaluate(() => window.flagCalls.length)
await tab.evaluate(({ userId }) => {
    window.posthog.identify(userId, { plan: 'pro' })
    window.posthog.reloadFeatureFlags()
}, { userId })
const flipped = await tab
    .waitForFunction((count) => window.flagCalls.length > count && window.flagCalls.at(-1).flags.includes('js-pro'), callsBefore, { timeout: 15000 })
    .then(() => true, () => false)
const after = await read()
await settle()

const calls = await tab.evaluate(() => window.flagCalls)
await tab.close({ runBeforeUnload: true })
await new Promise((resolve) => setTimeout(resolve, 1000))
await browser.close()
server.close()
process.stdout.write(
    JSON.stringify({
        run_id: runId,
        anon_id: anonId,
        user_id: userId,
        booted,
        flipped,
        before,
        server_before: serverBefore,
        after,
        calls,
        requests,
        failed,
        page_errors: pageErrors,
    }) + '\n'
)
