// Drives posthog-node against a hogflare server.
//
//   node node_sdk.mjs --host http://127.0.0.1:8080 --token phc_x --scenario capture --run-id abc
//
// Prints one JSON object describing what was sent, for the test to look up in the lake.
import { PostHog } from 'posthog-node'

const args = Object.fromEntries(
    process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), [])
)
const runId = args['run-id'] ?? String(Date.now())
const client = new PostHog(args.token, { host: args.host, flushAt: 20, flushInterval: 10000 })
const failures = []
client.on('error', (err) => failures.push(String(err)))

const scenarios = {
    // Events queue up in the client and are sent by shutdown().
    async capture() {
        const ids = []
        for (let i = 0; i < 5; i++) {
            const distinctId = `node-${runId}-${i % 2}`
            ids.push(distinctId)
            client.capture({ distinctId, event: 'node event', properties: { run_id: runId, index: i, plan: 'pro' } })
        }
        client.capture({
            distinctId: `node-${runId}-0`,
            event: 'node event with time',
            properties: { run_id: runId },
            timestamp: new Date('2024-05-01T12:00:00Z'),
        })
        return { distinct_ids: [...new Set(ids)], expected: 6 }
    },
}

const result = await scenarios[args.scenario ?? 'capture']()
await client.shutdown()
process.stdout.write(JSON.stringify({ ...result, run_id: runId, errors: failures }) + '\n')
