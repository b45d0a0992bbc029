// posthog-node's local evaluation of feature flags, fed by a hogflare server's definitions.
//
//   node flags_node.mjs --host http://127.0.0.1:8080 --token phc_x --key phx_x --input users.json --output out.json
//
// The input is {"users": [{distinct_id, person_properties, groups, group_properties}...],
// "sample": [[user index, flag key]...]}. For every user it records what posthog-node answers
// when it may only evaluate locally (a flag it cannot decide is left out) and when it may ask
// /flags for the rest; for every sampled pair, getFeatureFlag and getFeatureFlagPayload. The
// output file holds {loaded, local, combined, sampled, errors, notices}: notices are the SDK's
// debug lines about the /flags answers' format (it says so when a server lacks /flags?v=4).
import { readFileSync, writeFileSync } from 'node:fs'
import { PostHog } from 'posthog-node'

const args = Object.fromEntries(
    process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), [])
)
const input = JSON.parse(readFileSync(args.input, 'utf8'))
const errors = []
// The SDK binds console.log when it is made; its debug chatter is dropped, the format notices kept.
const notices = []
console.log = (...parts) => {
    const line = parts.map(String).join(' ')
    if (line.includes('[FEATURE FLAGS]') && line.includes('/flags')) notices.push(line)
}
const client = new PostHog(args.token, {
    host: args.host,
    personalApiKey: args.key,
    featureFlagsPollingInterval: 600000,
    flushAt: 1000,
    flushInterval: 60000,
    fetchRetryCount: 0,
    sendFeatureFlagEvent: false,
})
client.on('error', (err) => errors.push(String(err)))
client.debug(true)

const ready = await client.waitForLocalEvaluationReady(20000)
const loaded = ready ? Object.keys(client.featureFlagsPoller.featureFlagsByKey).sort() : []

function options(user, onlyEvaluateLocally) {
    return {
        personProperties: user.person_properties,
        groups: user.groups,
        groupProperties: user.group_properties,
        onlyEvaluateLocally,
        sendFeatureFlagEvents: false,
    }
}

// Payloads as the SDK hands them out; a flag with none is left out, as in /flags.
function present(payloads) {
    return Object.fromEntries(Object.entries(payloads ?? {}).filter(([, value]) => value !== undefined && value !== null))
}

const local = []
const combined = []
for (const user of input.users) {
    const alone = await client.getAllFlagsAndPayloads(user.distinct_id, options(user, true))
    local.push({ flags: alone.featureFlags, payloads: present(alone.featureFlagPayloads) })
    const helped = await client.getAllFlagsAndPayloads(user.distinct_id, options(user, false))
    combined.push({ flags: helped.featureFlags, payloads: present(helped.featureFlagPayloads) })
}

const sampled = []
for (const [index, key] of input.sample) {
    const user = input.users[index]
    const value = await client.getFeatureFlag(key, user.distinct_id, options(user, false))
    const payload = await client.getFeatureFlagPayload(key, user.distinct_id, undefined, options(user, false))
    sampled.push({ value: value ?? null, payload: payload ?? null })
}

await client.shutdown()
writeFileSync(args.output, JSON.stringify({ loaded, local, combined, sampled, errors, notices }))
process.stdout.write(JSON.stringify({ users: input.users.length, sampled: sampled.length, errors: errors.length }) + '\n')
