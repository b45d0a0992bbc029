// Experience continuity in Debian's Chromium: a returning user browses anonymously, sees a
// variant, logs in, and keeps that variant, on this page and on the next one.
//
//   node flags_continuity_browser.mjs --host http://127.0.0.1:8080 --token phc_x --anon-id a --user-id u
//
// The anonymous id is given (posthog-js's bootstrap) so the test can pick one whose variant
// differs from the user's own. The page reads the flags `exp` (ensure_experience_continuity) and
// `plain` (the same flag without it) before identify, after the reload identify triggers, and
// on a second page of the same browser, where posthog-js starts from what it persisted. Prints
// one JSON object: the three readings, the flags requests the pages made, and any errors.
import { args, initPosthog, launchChromium, servePage } from './harness.mjs'

const { host, token } = args
const anonId = args['anon-id']
const userId = args['user-id']

const { server, pageUrl } = await servePage('hogflare continuity page', '<p>continuity</p>')
const browser = await launchChromium()
const context = await browser.newContext()
const pageErrors = []
const flagsRequests = []

async function open(bootstrap) {
    const tab = await context.newPage()
    tab.on('pageerror', (err) => pageErrors.push(String(err)))
    tab.on('request', (request) => {
        const url = new URL(request.url())
        if (request.url().startsWith(host) && url.pathname.startsWith('/flags')) flagsRequests.push(url.search)
    })
    await tab.goto(pageUrl)
    await initPosthog(tab, { host, token, bootstrap })
    await tab.waitForFunction(() => window.flagCalls.length > 0, null, { timeout: 15000 })
    return tab
}

function read(tab) {
    return tab.evaluate(() => ({
        distinct_id: window.posthog.get_distinct_id(),
        exp: window.posthog.getFeatureFlag('exp') ?? null,
        plain: window.posthog.getFeatureFlag('plain') ?? null,
    }))
}

const first = await open({ distinctID: anonId, isIdentifiedID: false })
const before = await read(first)

// identify reloads the flags with $anon_distinct_id: the one request that names it.
const calls = await first.evaluate(() => window.flagCalls.length)
await first.evaluate((userId) => window.posthog.identify(userId), userId)
await first.waitForFunction((count) => window.flagCalls.length > count, calls, { timeout: 15000 })
const after = await read(first)
await first.waitForTimeout(500)

// The next page: posthog-js knows the user from its persistence and no longer names the anonymous id.
const second = await open(null)
const reloaded = await read(second)

await browser.close()
server.close()
process.stdout.write(JSON.stringify({ before, after, reloaded, flags_requests: flagsRequests.length, page_errors: pageErrors }) + '\n')
