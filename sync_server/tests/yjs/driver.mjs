// One real Yjs client (yjs + y-websocket's WebsocketProvider + y-protocols
// awareness) driven by tests/test_yjs_interop.py over stdin/stdout.
//
// Input: one JSON command per line, {"id": N, "cmd": NAME, ...arguments}.
// Output: one JSON object per line, either the reply to a command
// ({"id": N, "ok": true, ...} or {"id": N, "ok": false, "error": "..."}) or,
// after any change, the client's whole state
// ({"event": "state", "text", "map", "array", "status", "closed", "synced",
// "clientID", "awareness"}).
//
// Commands:
//   connect url room [token]  create the Y.Doc and the provider (token as ?token=)
//   insert text [index]       insert into Y.Text "text" (default: at the end)
//   map_set key value         set a key of Y.Map "map"
//   array_push values         append to Y.Array "array"
//   awareness state           set the local awareness state (an object)
//   state                     reply with the state now
//   disconnect                provider.disconnect(): edits stay local
//   reconnect [url] [token]   point the provider at url (another server) and
//                             connect; a provider still retrying a dead server
//                             goes there on its next attempt
//   quit                      destroy the provider and exit
//
// Node 18 has no global WebSocket: the `ws` package is the provider's WebSocket.
import readline from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { Awareness } from 'y-protocols/awareness'

let doc = null
let provider = null
let awareness = null
let status = 'new'
let closed = null // the last close the server sent: {code, reason}

const write = (message) => process.stdout.write(JSON.stringify(message) + '\n')

const snapshot = () => ({
  text: doc ? doc.getText('text').toString() : '',
  map: doc ? doc.getMap('map').toJSON() : {},
  array: doc ? doc.getArray('array').toJSON() : [],
  status,
  closed,
  synced: provider ? provider.synced : false,
  clientID: doc ? doc.clientID : null,
  // JSON object keys are strings: clientID -> state
  awareness: awareness ? Object.fromEntries(awareness.getStates()) : {}
})

const emitState = () => write({ event: 'state', ...snapshot() })

const params = (token) => (token ? { token } : {})

const commands = {
  connect ({ url, room, token }) {
    if (provider) throw new Error('already connected')
    doc = new Y.Doc()
    awareness = new Awareness(doc)
    provider = new WebsocketProvider(url, room, doc, {
      WebSocketPolyfill: WebSocket,
      awareness,
      params: params(token),
      // Only the server may carry updates between the test's clients.
      disableBc: true,
      maxBackoffTime: 500
    })
    doc.on('update', emitState)
    awareness.on('change', emitState)
    provider.on('status', (event) => {
      status = event.status
      emitState()
    })
    provider.on('sync', emitState)
    provider.on('connection-close', (event) => {
      if (event) {
        closed = { code: event.code, reason: String(event.reason ?? '') }
        emitState()
      }
    })
    return { clientID: doc.clientID }
  },
  insert ({ text, index }) {
    const ytext = doc.getText('text')
    ytext.insert(index ?? ytext.length, text)
  },
  map_set ({ key, value }) {
    doc.getMap('map').set(key, value)
  },
  array_push ({ values }) {
    doc.getArray('array').push(values)
  },
  awareness ({ state }) {
    awareness.setLocalState(state)
  },
  state () {
    return snapshot()
  },
  disconnect () {
    provider.disconnect()
  },
  reconnect ({ url, token }) {
    if (url) provider.serverUrl = url.replace(/\/+$/, '')
    if (token !== undefined) provider.params = params(token)
    provider.connect()
  },
  quit () {
    provider?.destroy()
    setImmediate(() => process.exit(0))
  }
}

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (!line.trim()) return
  let request = {}
  try {
    request = JSON.parse(line)
    const handler = commands[request.cmd]
    if (!handler) throw new Error(`unknown command ${request.cmd}`)
    write({ id: request.id, ok: true, ...(handler(request) ?? {}) })
  } catch (error) {
    write({ id: request.id, ok: false, error: String(error?.stack ?? error) })
  }
})
// The test went away: do not linger.
lines.on('close', () => {
  provider?.destroy()
  process.exit(0)
})
