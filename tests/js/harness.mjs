// What every browser scenario shares: its command-line arguments, a page with posthog-js served
// from its own port (so every call to hogflare crosses origins, as on a real site), and Debian's
// Chromium started the way this machine allows.
import http from 'node:http'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))

export const args = Object.fromEntries(
    process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), [])
)

// Serve `body` as the page and the posthog-js bundle beside it; resolves to the page's URL.
export async function servePage(title, body) {
    const bundle = readFileSync(join(here, 'node_modules/posthog-js/dist/array.full.js'))
    const page = `<!doctype html><html><head><title>${title}</title>
<script src="/posthog.js"></script></head><body>${body}</body></html>`
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
    return { server, pageUrl: `http://127.0.0.1:${server.address().port}/` }
}

export function launchChromium() {
    return chromium.launch({
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
}

// Start posthog-js on the page as the flag scenarios do: no autocapture or replay, events sent
// every 200 ms, each onFeatureFlags call kept in `window.flagCalls`, `options` on top. Resolves
// to the distinct id.
export function initPosthog(tab, { host, token, runId = null, bootstrap = null, options = {} }) {
    return tab.evaluate(({ host, token, runId, bootstrap, options }) => new Promise((resolve) => {
        window.flagCalls = []
        window.posthog.init(token, {
            api_host: host,
            opt_out_useragent_filter: true,
            autocapture: false,
            capture_pageview: false,
            disable_session_recording: true,
            request_queue_config: { flush_interval_ms: 200 },
            ...(bootstrap ? { bootstrap } : {}),
            ...options,
            loaded: (ph) => {
                if (runId) ph.register({ run_id: runId })
                ph.onFeatureFlags((flags, variants, context) => {
                    window.flagCalls.push({ flags: [...flags].sort(), variants: { ...variants }, errorsLoading: Boolean(context?.errorsLoading) })
                })
                resolve(ph.get_distinct_id())
            },
        })
    }), { host, token, runId, bootstrap, options })
}
