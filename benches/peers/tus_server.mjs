// @tus/server with its file store, as its README sets it up, for the benchmark:
//   node tus_server.mjs <node_modules> <port> <directory>
// Serves tus 1.0 at /files/ on 127.0.0.1:<port>, storing uploads in <directory>.
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, port, directory] = process.argv.slice(2);
const load = (name) => import(pathToFileURL(path.join(modules, name, 'dist', 'index.js')).href);
const { Server } = await load('@tus/server');
const { FileStore } = await load('@tus/file-store');

const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) });
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), '127.0.0.1');
