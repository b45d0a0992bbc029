// posthog-js with `cookieless_mode: 'always'` in Debian's Chromium: no id is kept in the
// browser, every event goes out with the `$posthog_cookieless` sentinel, and hogflare names the
// visitor.
//
//   node cookieless_browser.mjs --host http://127.0.0.1:8080 --token phc_x --run-id abc --user-id u
//
// Two pages of one browser capture an event each, anonymously (the first sets a person property);
// then the visitor identifies and captures one more. Prints one JSON object: the distinct ids
// posthog-js reported, the flags it got on the second page, and any errors.
import { args, launchChromium, servePage } from './harness.mjs'

const { host, token } = args
const runId = args['run-id']
const userId = args['user-id']

const { server, pageUrl } = await servePage('hogflare cookieless page', '<p>cookieless</p>')
const browser = await launchChromium()
const context = await browser.newContext()
const pageErrors = []

async function open() {
    const tab = await context.newPage()
    tab.on('pageerror', (err) => pageErrors.push(String(err)))
    await tab.goto(pageUrl)
    const distinctId = await tab.evaluate(({ host, token, runId }) => new Promise((resolve) => {
        window.posthog.init(token, {
            api_host: host,
            cookieless_mode: 'always',
            opt_out_useragent_filter: true,
            autocapture: false,
            capture_pageview: false,
            disable_session_recording: true,
            person_profiles: 'always',
            request_queue_config: { flush_interval_ms: 200 },
            loaded: (ph) => {
                ph.register({ run_id: runId })
                window.flagsSeen = new Promise((seen) => ph.onFeatureFlags((flags) => seen([...flags].sort())))
                resolve(ph.get_distinct_id())
            },
        })
    }), { host, token, runId })
    return { tab, distinctId }
}

// Sent and answered: one flush interval and a margin, so that each step reaches hogflare in order.
const settle = (tab) => tab.waitForTimeout(1200)

const first = await open()
await first.tab.evaluate(() => window.posthog.capture('viewed pricing', { page: 1, $set: { plan: 'pro' } }))
await settle(first.tab)
await first.tab.close()

const second = await open()
const flags = await second.tab.evaluate(() => window.flagsSeen)
await second.tab.evaluate(() => window.posthog.capture('viewed pricing', { page: 2 }))
await settle(second.tab)
await second.tab.evaluate((userId) => window.posthog.identify(userId), userId)
await settle(second.tab)
await second.tab.evaluate(() => window.posthog.capture('signed in', { page: 2 }))
await settle(second.tab)
const identified = await second.tab.evaluate(() => window.posthog.get_distinct_id())

await browser.close()
server.close()
process.stdout.write(JSON.stringify({
    anonymous: [first.distinctId, second.distinctId],
    identified,
    flags,
    page_errors: pageErrors,
}) + '\n')
