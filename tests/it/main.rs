//! Integration tests: the real server on ephemeral loopback ports, real clients
//! (hyper, curl, raw sockets), a recording backend, and checks of bytes on disk.

mod authorize;
mod chaos;
mod chunked;
mod cli;
mod django;
mod download;
mod draft;
mod durability;
mod faults;
mod fuzz_corpus;
mod hostile;
mod limits;
mod load;
mod metrics;
mod multipart;
mod nginx_resumable;
mod old_state;
mod passthrough;
mod progress;
mod proxy_protocol;
mod raw;
mod reload;
mod s3;
mod shared;
mod support;
mod systemd;
mod tls;
mod trust;
mod tus;
mod tus_clients;
mod units;
mod vectors;
