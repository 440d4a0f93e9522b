// Subscribes to a registry's axon socket with the original Thalassa client (0.4.1) and prints
// one JSON line per event it emits, as an original subscriber (an original aqueduct, Crowsnest)
// would see them. Arguments: <axon port> <api port> [name [version]]. The client's own cache
// de-duplicates: `online` is emitted for a new id or changed meta only.
'use strict';
const path = require('path');
const modules = process.env.ORIGINAL_CLIENT_MODULES;
const thalassa = require(path.join(modules, 'thalassa'));

const [axonPort, apiPort, name, version] = process.argv.slice(2);
const client = new thalassa.Client({
  host: '127.0.0.1',
  port: Number(axonPort),
  apiport: Number(apiPort),
});
client.on('online', (registration) =>
  console.log(JSON.stringify({ event: 'online', id: registration.id, meta: registration.meta })));
client.on('offline', (id) => console.log(JSON.stringify({ event: 'offline', id })));
client.subscribe(name, version);
console.log(JSON.stringify({ event: 'subscribed' }));
// The parent ends this process by closing its stdin.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
