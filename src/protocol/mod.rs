//! The protocols a client may upload with, one module each; the gateway's `dispatch`
//! picks one by the route's kind. A protocol reads its requests, asks the layers below
//! (the ingest pipeline, the resumable engine) to do the work, and answers in its own
//! shape. No protocol names another: what two share lives below them
//! (`ingest::resumable` for the resumable ones, `tus::headers` for the tus family).
//!
//! * `upload`: one request, one upload: `multipart/form-data` and raw bodies;
//! * `tus`: tus 1.0 (`tus::v1`) and the IETF resumable-upload draft (`tus::draft`),
//!   one family on one route, sharing `tus::headers`;
//! * `chunked`: django-chunked-upload;
//! * `nginx`: nginx-upload-module's resumable segments.

pub mod chunked;
pub mod nginx;
pub mod tus;
pub mod upload;
