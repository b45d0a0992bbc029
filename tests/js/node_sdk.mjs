// Drives posthog-node against a hogflare server.
//
//   node node_sdk.mjs --host http://127.0.0.1:8080 --token phc_x --scenario capture --run-id abc [--geoip on]
//
// posthog-node asks the server not to locate its events ($geoip_disable) unless `--geoip on`.
// Prints one JSON object describing what was sent, for the test to look up in the lake.
import { PostHog } from 'posthog-node'

const args = Object.fromEntries(
    process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), [])
)
const runId = args['run-id'] ?? String(Date.now())
const geoip = args.geoip === 'on' ? { disableGeoip: false } : {}
const client = new PostHog(args.token, { host: args.host, flushAt: 20, flushInterval: 10000, ...geoip })
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
    // A string cut inside an emoji keeps half of it, which JSON.stringify sends as a lone
    // surrogate escape: one batch, the cut event between two whole ones.
    async cut_emoji() {
        const distinctId = `node-cut-${runId}`
        const cut = '😀'.slice(0, 1)
        client.capture({ distinctId, event: 'before', properties: { run_id: runId } })
        client.capture({ distinctId, event: 'cut', properties: { run_id: runId, title: `smile ${cut}` } })
        client.capture({ distinctId, event: 'after', properties: { run_id: runId, whole: '😀' } })
        return { distinct_ids: [distinctId], expected: 3 }
    },
    // Persons and groups, one step per flush so each step reaches hogflare before the next:
    // an anonymous capture with $set/$set_once, identify linking it, alias, a group, a capture with
    // the group, and personless captures for a new id and for the identified user.
    async persons() {
        const anonId = `node-anon-${runId}`
        const userId = `node-user-${runId}`
        const aliasId = `node-alias-${runId}`
        const ghostId = `node-ghost-${runId}`
        const steps = [
            () =>
                client.capture({
                    distinctId: anonId,
                    event: 'node anonymous',
                    properties: { run_id: runId, $set: { plan: 'free' }, $set_once: { first_seen: '2024-01-01' } },
                }),
            () =>
                client.identify({
                    distinctId: userId,
                    properties: {
                        $set: { name: 'Grace', plan: 'pro' },
                        $set_once: { first_seen: '2025-06-01', signup: 'node' },
                        $anon_distinct_id: anonId,
                    },
                }),
            () => client.alias({ distinctId: userId, alias: aliasId }),
            () => client.capture({ distinctId: aliasId, event: 'node via alias', properties: { run_id: runId } }),
            () => client.groupIdentify({ groupType: 'company', groupKey: 'acme', properties: { name: 'Acme', employees: 11 } }),
            () =>
                client.capture({
                    distinctId: userId,
                    event: 'node with group',
                    properties: { run_id: runId },
                    groups: { company: 'acme' },
                }),
            () =>
                client.capture({
                    distinctId: ghostId,
                    event: 'node personless',
                    properties: { run_id: runId, $process_person_profile: false, $set: { ignored: true } },
                }),
            () =>
                client.capture({
                    distinctId: userId,
                    event: 'node personless known',
                    properties: { run_id: runId, $process_person_profile: false },
                }),
        ]
        for (const step of steps) {
            step()
            await client.flush()
        }
        return { anon_id: anonId, user_id: userId, alias_id: aliasId, ghost_id: ghostId }
    },
}

const result = await scenarios[args.scenario ?? 'capture']()
await client.shutdown()
process.stdout.write(JSON.stringify({ ...result, run_id: runId, errors: failures }) + '\n')
