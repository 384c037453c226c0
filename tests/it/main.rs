//! Integration tests: the real server on ephemeral loopback ports, real clients
//! (hyper, curl, raw sockets), a recording backend, and checks of bytes on disk.

mod cli;
mod limits;
mod multipart;
mod passthrough;
mod raw;
mod support;
