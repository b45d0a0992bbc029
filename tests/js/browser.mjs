// Drives posthog-js in Debian's Chromium against a hogflare server.
//
//   node browser.mjs --host http://127.0.0.1:8080 --token phc_x --scenario basic --run-id abc
//
// The page is served from its own port, so every call to hogflare is cross-origin, as on a real
// site. Prints one JSON object: what the page did (distinct ids, run id) for the test to look up.
import http from 'node:http'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
const args = Object.fromEntries(
    process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), [])
)
const host = args.host
const token = args.token
const scenario = args.scenario ?? 'basic'
const runId = args['run-id'] ?? String(Date.now())
const bundle = readFileSync(join(here, 'node_modules/posthog-js/dist/array.full.js'))

const page = `<!doctype html><html><head><title>hogflare test page</title>
<script src="/posthog.js"></script></head><body><button id="buy">Buy</button></body></html>`

const server = http.createServer((req, res) => {
    if (req.url.startsWith('/posthog.js')) {
        res.writeHead(200, { 'content-type': 'application/javascript' })
        res.end(bundle)
    } else {
        res.writeHead(200, { 'content-type': 'text/html' })
        res.end(page)
    }
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const pageUrl = `http://127.0.0.1:${server.address().port}/`

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-quic',
        '--no-first-run',
        '--disable-sync',
    ],
})

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
}

const context = await browser.newContext()
const tab = await context.newPage()
const errors = []
tab.on('pageerror', (err) => errors.push(String(err)))
await tab.goto(pageUrl)
const result = await scenarios[scenario](tab)
await tab.close({ runBeforeUnload: true })
// sendBeacon requests are handed to the browser; give them a moment before it exits.
await new Promise((resolve) => setTimeout(resolve, 1000))
await browser.close()
server.close()
process.stdout.write(JSON.stringify({ ...result, run_id: runId, page_errors: errors }) + '\n')
