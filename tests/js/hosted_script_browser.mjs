// A page that loads posthog-js from hogflare itself, as PostHog's HTML snippet does
// (`<api_host>/static/array.js`), with exception autocapture on: posthog-js then loads that
// extension from its asset host, hogflare too, and an uncaught error on the page is captured.
// Scenario `snippet` turns it on in `init`; `remote` leaves it to hogflare's remote config.
//
//   node hosted_script_browser.mjs --host http://127.0.0.1:8080 --token phc_x --scenario snippet --run-id abc
//
// Prints one JSON object: the distinct id, the scripts fetched from hogflare and their statuses.
import http from 'node:http'
import { args, initPosthog, launchChromium } from './harness.mjs'

const host = args.host
const token = args.token
const runId = args['run-id'] ?? String(Date.now())
const options = args.scenario === 'remote' ? {} : { capture_exceptions: true }

const page = `<!doctype html><html><head><title>hosted script</title>
<script src="${host}/static/array.js"></script></head><body></body></html>`
const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' })
    res.end(page)
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const pageUrl = `http://127.0.0.1:${server.address().port}/`

const browser = await launchChromium()
const tab = await (await browser.newContext()).newPage()
const errors = []
tab.on('pageerror', (err) => errors.push(String(err)))
const scripts = []
tab.on('response', (response) => {
    const url = response.url()
    if (url.startsWith(`${host}/static/`)) scripts.push({ path: url.slice(host.length), status: response.status() })
})
await tab.goto(pageUrl)
const distinctId = await initPosthog(tab, { host, token, runId, options })
await tab.evaluate(() => window.posthog.capture('from a hosted script'))
// Wait for the extension to load, then raise an error nobody catches.
await tab.waitForFunction(() => Boolean(window.__PosthogExtensions__?.errorWrappingFunctions), null, { timeout: 20000 })
await tab.evaluate(() => setTimeout(() => { throw new Error('thrown on the page') }, 0))
await tab.waitForTimeout(2000)
await browser.close()
server.close()
process.stdout.write(JSON.stringify({ distinct_id: distinctId, scripts, page_errors: errors, run_id: runId }) + '\n')
