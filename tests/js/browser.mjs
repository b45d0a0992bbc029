// Drives posthog-js in Debian's Chromium against a hogflare server.
//
//   node browser.mjs --host http://127.0.0.1:8080 --token phc_x --scenario basic --run-id abc
//
// The page is served from its own port, so every call to hogflare is cross-origin, as on a real
// site. Prints one JSON object: what the page did (distinct ids, run id) for the test to look up.
import { args, launchChromium, servePage } from './harness.mjs'

const host = args.host
const token = args.token
const scenario = args.scenario ?? 'basic'
const runId = args['run-id'] ?? String(Date.now())

const { server, pageUrl } = await servePage('hogflare test page', '<button id="buy">Buy</button>')
const browser = await launchChromium()

// Start posthog-js on the page with hogflare as its host, register the run id, capture one
// custom event, and resolve to the anonymous distinct id.
function boot(tab, options, properties) {
    return tab.evaluate(({ host, token, runId, options, properties }) => new Promise((resolve) => {
        window.posthog.init(token, {
            api_host: host,
            opt_out_useragent_filter: true,
            autocapture: false,
            capture_pageview: true,
            disable_session_recording: true,
            ...options,
            loaded: (ph) => {
                ph.register({ run_id: runId })
                ph.capture('custom event', properties)
                resolve(ph.get_distinct_id())
            },
        })
    }), { host, token, runId, options, properties })
}

// Wait until posthog-js has sent what it queued: one flush interval, then no request to hogflare
// in flight. The persons scenarios step through identity changes, and each step's events must reach
// hogflare before the next step's, as they would on a real site where the steps are seconds apart.
const inFlight = new Set()
async function settle(tab, flushMs = 200) {
    await tab.waitForTimeout(flushMs * 2)
    while (inFlight.size > 0) await tab.waitForTimeout(50)
    await tab.waitForTimeout(100)
}

// The fast queue the persons scenarios use; everything else is posthog-js's defaults.
const quickQueue = { request_queue_config: { flush_interval_ms: 200 } }

const scenarios = {
    // A pageview on load, a custom event with properties, then the page closes: the queue is
    // flushed with sendBeacon as the page unloads.
    async basic(tab) {
        const distinctId = await boot(tab, {}, { color: 'blue', size: 3, nested: { ok: true } })
        // Let the batched queue go out once (3 s), then capture one more that only the unload sends.
        await tab.waitForTimeout(3500)
        await tab.evaluate(() => window.posthog.capture('before unload', { last: true }))
        return { distinct_id: distinctId }
    },
    // The same events with batching off: each is its own request with a timestamp, not an offset.
    async instant(tab) {
        const distinctId = await boot(tab, { request_batching: false }, { color: 'green' })
        await tab.waitForTimeout(1500)
        return { distinct_id: distinctId }
    },
    // Every event processes the person (person_profiles: 'always'): anonymous browsing, identify,
    // alias, person properties, a group, a super property, then reset to a new anonymous visitor.
    async persons(tab) {
        const userId = `js-user-${runId}`
        const aliasId = `js-alias-${runId}`
        const anonId = await boot(tab, { person_profiles: 'always', ...quickQueue }, { step: 'anonymous' })
        await tab.evaluate(() => window.posthog.capture('anonymous browsing', { step: 'anonymous' }))
        await settle(tab)
        await tab.evaluate(
            ({ userId }) => window.posthog.identify(userId, { name: 'Ada', plan: 'pro' }, { first_seen: '2024-01-01' }),
            { userId }
        )
        await settle(tab)
        await tab.evaluate(() => window.posthog.capture('after identify', { step: 'identified' }))
        await settle(tab)
        // A page of a single-page app: only the page's properties change, which the event's row
        // shows but which do not by themselves change the stored person.
        await tab.evaluate(() => {
            window.history.pushState({}, '', '/pricing?plan=team')
            window.posthog.capture('after navigation', { step: 'navigated' })
        })
        await settle(tab)
        await tab.evaluate(({ aliasId }) => window.posthog.alias(aliasId), { aliasId })
        await settle(tab)
        await tab.evaluate(() => window.posthog.setPersonProperties({ plan: 'team', favourite: 'tea' }, { first_seen: '1999-12-31', signup: 'web' }))
        await settle(tab)
        await tab.evaluate(() => window.posthog.group('company', 'acme', { name: 'Acme' }))
        await settle(tab)
        await tab.evaluate(() => {
            window.posthog.capture('with group', { step: 'grouped' })
            window.posthog.register({ tier: 'gold' })
            window.posthog.capture('registered', { step: 'registered' })
        })
        await settle(tab)
        const newAnonId = await tab.evaluate(({ runId }) => {
            window.posthog.reset()
            window.posthog.register({ run_id: runId })
            window.posthog.capture('after reset', { step: 'reset' })
            return window.posthog.get_distinct_id()
        }, { runId })
        await settle(tab)
        return { distinct_id: anonId, anon_id: anonId, user_id: userId, alias_id: aliasId, new_anon_id: newAnonId }
    },
    // posthog-js's default person_profiles ('identified_only'): anonymous events are personless
    // until identify, which creates the person with both ids.
    async identified_only(tab) {
        const userId = `js-later-${runId}`
        const anonId = await boot(tab, quickQueue, { step: 'anonymous' })
        await tab.evaluate(() => window.posthog.capture('anonymous browsing', { step: 'anonymous' }))
        await settle(tab)
        await tab.evaluate(({ userId }) => window.posthog.identify(userId, { name: 'Bob' }), { userId })
        await settle(tab)
        await tab.evaluate(() => window.posthog.capture('after identify', { step: 'identified' }))
        await settle(tab)
        return { distinct_id: anonId, anon_id: anonId, user_id: userId }
    },
    // The lists a page's code may ask posthog-js for: early access features and surveys.
    async public_lists(tab) {
        const distinctId = await boot(tab, {}, {})
        const lists = await tab.evaluate(() => Promise.all([
            new Promise((resolve) => window.posthog.getEarlyAccessFeatures((features) => resolve(features), true)),
            new Promise((resolve) => window.posthog.getSurveys((surveys, context) => resolve({ surveys, context }), true)),
        ]))
        return { distinct_id: distinctId, early_access_features: lists[0], surveys: lists[1] }
    },
}

const context = await browser.newContext()
const tab = await context.newPage()
const errors = []
tab.on('pageerror', (err) => errors.push(String(err)))
const consoleErrors = []
tab.on('console', (message) => message.type() === 'error' && consoleErrors.push(message.text()))
const toHogflare = (request) => request.url().startsWith(host)
tab.on('request', (request) => toHogflare(request) && inFlight.add(request))
tab.on('requestfinished', (request) => inFlight.delete(request))
tab.on('requestfailed', (request) => inFlight.delete(request))
await tab.goto(pageUrl)
const result = await scenarios[scenario](tab)
await tab.close({ runBeforeUnload: true })
// sendBeacon requests are handed to the browser; give them a moment before it exits.
await new Promise((resolve) => setTimeout(resolve, 1000))
await browser.close()
server.close()
process.stdout.write(JSON.stringify({ ...result, run_id: runId, page_errors: errors, console_errors: consoleErrors }) + '\n')
