// Drives tus-js-client (Node) for porter's integration tests.
// usage: node tus_upload.js ENDPOINT FILE CHUNK [UPLOAD_URL]
// Uploads FILE in CHUNK-byte PATCHes (resuming at UPLOAD_URL if given), retrying
// dropped connections, and prints the upload URL on success.
// Environment: TUS_PROTOCOL (tus-js-client's `protocol`: 'tus-v1' by default, or
// 'ietf-draft-05' for the IETF draft, interop version 6); STOP_AFTER=N stops the upload
// once N bytes are acknowledged and prints its URL (to resume it later).
const tus = require('tus-js-client');
const fs = require('fs');

const [endpoint, file, chunk, uploadUrl] = process.argv.slice(2);
const stopAfter = Number(process.env.STOP_AFTER || 0);
const data = fs.readFileSync(file);
const upload = new tus.Upload(data, {
  endpoint,
  uploadUrl: uploadUrl || null,
  protocol: process.env.TUS_PROTOCOL || 'tus-v1',
  chunkSize: Number(chunk),
  retryDelays: [0, 100, 200, 400, 800],
  metadata: { filename: 'big.bin', filetype: 'application/octet-stream', album: 'js' },
  onChunkComplete: (_size, accepted) => {
    if (stopAfter && accepted >= stopAfter) {
      upload.abort().then(() => {
        console.log(upload.url);
        process.exit(0);
      });
    }
  },
  onError: (err) => {
    console.error('upload failed:', err.message);
    process.exit(1);
  },
  onSuccess: () => {
    console.log(upload.url);
  },
});
upload.start();
