// Drives tus-js-client (Node) for porter's integration tests.
// usage: node tus_upload.js ENDPOINT FILE CHUNK [UPLOAD_URL]
// Uploads FILE in CHUNK-byte PATCHes (resuming at UPLOAD_URL if given), retrying
// dropped connections, and prints the upload URL on success.
const tus = require('tus-js-client');
const fs = require('fs');

const [endpoint, file, chunk, uploadUrl] = process.argv.slice(2);
const data = fs.readFileSync(file);
const upload = new tus.Upload(data, {
  endpoint,
  uploadUrl: uploadUrl || null,
  chunkSize: Number(chunk),
  retryDelays: [0, 100, 200, 400, 800],
  metadata: { filename: 'big.bin', filetype: 'application/octet-stream', album: 'js' },
  onError: (err) => {
    console.error('upload failed:', err.message);
    process.exit(1);
  },
  onSuccess: () => {
    console.log(upload.url);
  },
});
upload.start();
