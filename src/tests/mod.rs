//! The protocols run over the in-memory store, in process: each test starts porter on
//! a loopback socket with `Storage::in_memory` (no upload byte touches a disk) in front
//! of a fake app, and speaks the protocol as a client would. They prove that the
//! protocols see the store only through its traits; the disk and S3 stores have their
//! own integration tests (`tests/it`).

mod harness;
mod protocols;
